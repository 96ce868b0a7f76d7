"""Device agent latency on one thread: decision + re-rank + page, beside bare ONNX Runtime calls.

`python -m localrun.bench_agent --bundle artifacts/ranker/serving --device artifacts/device
 --value-model artifacts/policy/request_value.onnx`

The agent's local path (no cloud call) runs in process: close the last page, build the request
features, run the value model, pace, re-rank the cached pool with the device model, cut the
page; then one event batch (which re-ranks again). Interleaved with it, in the same loop, the
bare `InferenceSession.run` of the same two models on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from device_agent.build import build_pacer, build_session_factory
from device_agent.cloud_client import CloudList
from device_agent.inference.models import RerankerSlot
from device_agent.policy.features import request_features
from device_agent.policy.value import RequestValueModel
from device_agent.service import AgentService, AppEvent
from device_agent.session.registry import SessionRegistry
from device_agent.settings import DeviceSettings


class BundleCloud:
    """Answers from the serving bundle's rows in process (the cloud is not what is timed)."""

    def __init__(self, rows: np.ndarray, categories: np.ndarray) -> None:
        self.rows, self.categories = rows, categories
        self.rng = np.random.default_rng(0)

    def recommend(self, device_id: str, k: int, recent: list, exclude: list[int]) -> CloudList:
        ids = self.rng.choice(len(self.rows), size=k, replace=False)
        ctr = np.sort(self.rng.uniform(0.01, 0.3, k))[::-1].astype(np.float32)
        return CloudList(ids, self.categories[ids], ctr, self.rows[ids], "din", "emb", "r")


def session(opts: ort.SessionOptions, data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def pct(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples) * 1e6, [50, 99])
    return float(p50), float(p99)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=Path("artifacts/ranker/serving"))
    ap.add_argument("--device", type=Path, default=Path("artifacts/device"))
    ap.add_argument("--value-model", type=Path, default=Path("artifacts/policy/request_value.onnx"))
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args(argv)

    with np.load(args.bundle / "tables.npz") as t:
        rows, cats = np.array(t["item_rows"]), np.array(t["item_category"])
    manifest = json.loads((args.device / "manifest.json").read_text())
    reranker_bytes = (args.device / manifest["file"]).read_bytes()
    value_bytes = args.value_model.read_bytes()
    slot = RerankerSlot(threads=1)
    assert slot.install(reranker_bytes, manifest["sha256"], manifest["version"])
    settings = DeviceSettings(request_budget=0.1, n_categories=int(cats.max()) + 1)
    agent = AgentService(
        SessionRegistry(build_session_factory(settings), 10), BundleCloud(rows, cats),  # type: ignore[arg-type]
        slot, RequestValueModel(value_bytes, threads=1), settings.pool_size, settings.max_k,
        "value", build_pacer(settings),
    )  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    bare_reranker, bare_value = session(opts, reranker_bytes), session(opts, value_bytes)
    value_input = bare_value.get_inputs()[0].name

    step_times, event_times, bare_rr, bare_v = [], [], [], []
    rng = np.random.default_rng(1)
    for step in range(args.steps):
        t0 = time.perf_counter()
        page = agent.recommend("bench", settings.page_size)
        t1 = time.perf_counter()
        events = [AppEvent(int(i), int(rng.random() < 0.1), step) for i in page.items.items]
        t2 = time.perf_counter()
        agent.record_events("bench", events)
        t3 = time.perf_counter()
        s = agent.sessions.get("bench")
        pool = s.pool
        if len(pool) >= 2 and s.behavior:
            feeds = {
                "behavior": np.stack([s.rows[i] for i, _, _ in s.behavior if i in s.rows])[None],
                "behavior_action": np.eye(3, dtype=np.float32)[
                    [a for i, a, _ in s.behavior if i in s.rows]
                ][None],
                "candidates": pool.rows[None], "cloud_score": pool.cloud_logit[None],
            }  # fmt: skip
            features = request_features(s.view)[None]
            t4 = time.perf_counter()
            bare_reranker.run(["score"], feeds)
            t5 = time.perf_counter()
            bare_value.run(None, {value_input: features})
            t6 = time.perf_counter()
            if step >= 100:  # warm-up excluded
                bare_rr.append(t5 - t4)
                bare_v.append(t6 - t5)
        if step >= 100:
            step_times.append(t1 - t0)
            event_times.append(t3 - t2)
    rows_out = [
        ("agent recommend: decision + page (re-rank when the pool changed)", pct(step_times)),
        ("agent events batch (4 events) + re-rank of the pool", pct(event_times)),
        ("bare ONNX Runtime: device re-ranker, same inputs", pct(bare_rr)),
        ("bare ONNX Runtime: request-value model, same features", pct(bare_v)),
    ]
    print("| path (one thread, interleaved in one run) | p50 µs | p99 µs |\n|---|---|---|")
    for name, (p50, p99) in rows_out:
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")
    status = agent.status()
    print(f"\nsteps {status['steps']}, paced cloud requests {status['cloud_requests']} "
          f"(rate {status['request_rate']:.3f} at budget 0.10)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
