"""Training and evaluation of the device's request policy on the simulated world (torch allowed)."""

import os

# One BLAS/OpenMP thread per process: on 2 shared cores, spinning thread pools made a 0.1 s
# gradient-boosting fit take minutes; parallelism comes from worker processes instead.
os.environ.setdefault("OMP_NUM_THREADS", "1")
