"""Latency of the device decision (features + value ONNX + pacing) beside a bare ONNX call.

python -m training.policy.latency
"""

from __future__ import annotations

import time

import numpy as np

from device_agent.policy.features import request_features
from device_agent.policy.pacing import DualPacer
from device_agent.policy.value import RequestValueModel
from tandem_core.onnx_session import cpu_session
from training.policy.compare import MODEL
from training.policy.device import DeviceSession, bench_world


def percentiles(samples: list[float]) -> str:
    p50, p99 = np.percentile(np.asarray(samples) * 1e6, [50, 99])
    return f"{p50:.1f} µs | {p99:.1f} µs"


def main(n: int = 5000) -> None:
    model_bytes = MODEL.read_bytes()
    model = RequestValueModel(model_bytes, threads=1)
    bare = cpu_session(model_bytes, threads=1)
    world, cloud = bench_world(0)
    dev = DeviceSession.start(world, cloud, 1, 7)
    for t in range(6):
        dev.step(t == 3)
    pacer = DualPacer(0.1, eta=0.5, lam=1.0)
    x = request_features(dev.view)[None, :]
    decision, onnx_only = [], []
    for _ in range(200):  # warm-up
        bare.run(None, {"features": x})
    for _ in range(n):
        t0 = time.perf_counter()
        ask = pacer.decide(model.value(request_features(dev.view)))
        pacer.update(ask)
        t1 = time.perf_counter()
        bare.run(None, {"features": x})
        t2 = time.perf_counter()
        decision.append(t1 - t0)
        onnx_only.append(t2 - t1)
    print("| path (one thread, interleaved in one run) | p50 | p99 |\n|---|---|---|")
    print(f"| device decision: features + value ONNX + pacing | {percentiles(decision)} |")
    print(f"| bare onnxruntime run of the same model | {percentiles(onnx_only)} |")


if __name__ == "__main__":
    main()
