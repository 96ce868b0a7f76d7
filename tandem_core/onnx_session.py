"""The one way Tandem opens an ONNX Runtime session: CPU provider, bounded threads."""

from __future__ import annotations

import onnxruntime as ort


def cpu_session(model: bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads and one inter-op thread: parallelism comes
    from serving requests concurrently, not from one call spreading over the shared cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
