"""Device agent latency on one thread: decision + re-rank + page, beside bare ONNX Runtime calls.

`python -m localrun.bench_agent --bundle artifacts/ranker/serving --device artifacts/device
 --value-model artifacts/policy/default/request_value.onnx
 [--detector artifacts/policy/default/shift_detector.onnx]`

The agent's local path (no cloud call) runs in process: close the last page, build the request
features, run the value model, pace, re-rank the cached pool with the device model, cut the
page; then one event batch (which re-ranks again). Interleaved with it, in the same loop, the
bare `InferenceSession.run` of the same two models on the same inputs.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from device_agent.build import build_pacer, build_session_factory
from device_agent.inference.models import RerankerSlot, ShiftDetectorSlot, ValueModelSlot
from device_agent.policy.decision import Exploration
from device_agent.policy.detector import ShiftDetector, detector_inputs
from device_agent.policy.features import request_features
from device_agent.policy.value import RequestValueModel
from device_agent.ports import CloudList
from device_agent.service import AgentService, AppEvent
from device_agent.session.registry import SessionRegistry
from device_agent.session.state import DeviceSession
from device_agent.settings import AgentSettings, DeviceSettings, FeedSettings, PacingSettings
from localrun.run_secrets import APP_SECRET, TOKEN_SECRET
from tandem_core.release import resolve


class BundleCloud:
    """Answers from the serving bundle's rows in process (the cloud is not what is timed)."""

    def __init__(self, rows: np.ndarray, categories: np.ndarray) -> None:
        self.rows, self.categories = rows, categories
        self.rng = np.random.default_rng(0)

    def recommend(self, device_id: str, k: int, recent: list, exclude: list[int]) -> CloudList:
        ids = self.rng.choice(len(self.rows), size=k, replace=False)
        ctr = np.sort(self.rng.uniform(0.01, 0.3, k))[::-1].astype(np.float32)
        return CloudList(ids, self.categories[ids], ctr, self.rows[ids], "din", "emb", "r")


WARMUP_STEPS = 100  # excluded from every timing


@dataclass(frozen=True)
class Inputs:
    """The bundle's item rows and categories, and the two device models as file bytes."""

    rows: np.ndarray
    categories: np.ndarray
    manifest: dict[str, Any]
    reranker: bytes
    value: bytes
    detector: bytes | None = None


@dataclass
class Timings:
    """Seconds per call, warm-up excluded."""

    recommend: list[float] = field(default_factory=list)
    events: list[float] = field(default_factory=list)
    bare_reranker: list[float] = field(default_factory=list)
    bare_value: list[float] = field(default_factory=list)
    bare_detector: list[float] = field(default_factory=list)


def pct(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples) * 1e6, [50, 99])
    return float(p50), float(p99)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=Path("artifacts/ranker/serving"))
    ap.add_argument("--device", type=Path, default=Path("artifacts/device"))
    ap.add_argument(
        "--value-model", type=Path, default=Path("artifacts/policy/default/request_value.onnx")
    )
    ap.add_argument("--detector", type=Path, default=None, help="also run a shift detector")
    ap.add_argument("--steps", type=int, default=3000)
    return ap.parse_args(argv)


def load_inputs(
    bundle: Path, device: Path, value_model: Path, detector: Path | None = None
) -> Inputs:
    bundle, device = resolve(bundle), resolve(device)  # registry kind dirs or version dirs
    with np.load(bundle / "tables.npz") as t:
        rows, cats = np.array(t["item_rows"]), np.array(t["item_category"])
    manifest = json.loads((device / "manifest.json").read_text())
    reranker_bytes = (device / manifest["file"]).read_bytes()
    detector_bytes = detector.read_bytes() if detector is not None else None
    return Inputs(rows, cats, manifest, reranker_bytes, value_model.read_bytes(), detector_bytes)


def build_agent(inputs: Inputs) -> tuple[AgentService, DeviceSettings]:
    """The agent on one thread, its cloud answered in process from the bundle's rows."""
    rows, cats, value_bytes = inputs.rows, inputs.categories, inputs.value
    manifest = inputs.manifest
    slot = RerankerSlot(threads=1)
    digests = manifest["sha256"]  # the trainer's own file: one digest; a release: per file
    digest = digests if isinstance(digests, str) else digests[manifest["file"]]
    assert slot.install(inputs.reranker, digest, manifest["version"])
    settings = DeviceSettings(
        agent=AgentSettings(token_secret=TOKEN_SECRET, app_secret=APP_SECRET),  # unused here
        feed=FeedSettings(n_categories=int(cats.max()) + 1),
        pacing=PacingSettings(request_budget=0.1),
    )
    agent = AgentService(
        SessionRegistry(build_session_factory(settings), 10), BundleCloud(rows, cats),  # type: ignore[arg-type]
        slot, ValueModelSlot(model=RequestValueModel(value_bytes, threads=1)),
        settings.feed.pool_size,
        settings.feed.max_k, "value", build_pacer(settings.pacing),
        exploration=Exploration(settings.pacing.exploration, settings.pacing.exploration_ask_prob),
        seed=0,
    )  # fmt: skip
    if inputs.detector is not None:
        agent.shift_detector = ShiftDetectorSlot()
        agent.shift_detector.current = ShiftDetector(inputs.detector, threads=1)
    return agent, settings


class BareModels:
    """The agent's two models as plain one-thread ONNX Runtime sessions."""

    def __init__(self, reranker: bytes, value: bytes, detector: bytes | None = None) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        self.reranker = ort.InferenceSession(reranker, opts, providers=["CPUExecutionProvider"])
        self.value = ort.InferenceSession(value, opts, providers=["CPUExecutionProvider"])
        self.value_input = self.value.get_inputs()[0].name
        self.detector = None if detector is None else ort.InferenceSession(
            detector, opts, providers=["CPUExecutionProvider"])  # fmt: skip

    def time(self, s: DeviceSession) -> tuple[float, float, float] | None:
        """Seconds of one re-rank, one value-model call and one detector call (0 without one)
        on the inputs the agent has just seen; None until the session has a pool of two and a
        behaviour history."""
        pool = s.pool
        if not (len(pool) >= 2 and s.behavior):
            return None
        feeds = {
            "behavior": np.stack([s.rows[i] for i, _, _ in s.behavior if i in s.rows])[None],
            "behavior_action": np.eye(3, dtype=np.float32)[
                [a for i, a, _ in s.behavior if i in s.rows]
            ][None],
            "candidates": pool.rows[None], "cloud_score": pool.cloud_logit[None],
        }  # fmt: skip
        features = request_features(s.view)[None]
        t0 = time.perf_counter()
        self.reranker.run(["score"], feeds)
        t1 = time.perf_counter()
        self.value.run(None, {self.value_input: features})
        t2 = time.perf_counter()
        if self.detector is None or s.shift_prior is None:
            return t1 - t0, t2 - t1, 0.0
        events, scalars = detector_inputs(s.view, s.shift_prior.rate())
        t3 = time.perf_counter()
        self.detector.run(None, {"events": events[None], "scalars": scalars[None]})
        return t1 - t0, t2 - t1, time.perf_counter() - t3


def time_agent_step(
    agent: AgentService, page_size: int, rng: np.random.Generator, step: int
) -> tuple[float, float]:
    """Seconds of one recommend and of the event batch that follows it (10% of items clicked)."""
    t0 = time.perf_counter()
    page = agent.recommend("bench", page_size)
    t1 = time.perf_counter()
    events = [AppEvent(int(i), int(rng.random() < 0.1), step) for i in page.items.items]
    t2 = time.perf_counter()
    agent.record_events("bench", events)
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2


def run(agent: AgentService, page_size: int, bare: BareModels, steps: int) -> Timings:
    """Agent step, then the bare calls on the same inputs, interleaved in one loop."""
    timings = Timings()
    rng = np.random.default_rng(1)
    for step in range(steps):
        recommend_s, events_s = time_agent_step(agent, page_size, rng, step)
        bare_s = bare.time(agent.sessions.get("bench"))
        if step < WARMUP_STEPS:
            continue
        if bare_s is not None:
            timings.bare_reranker.append(bare_s[0])
            timings.bare_value.append(bare_s[1])
            if bare_s[2]:
                timings.bare_detector.append(bare_s[2])
        timings.recommend.append(recommend_s)
        timings.events.append(events_s)
    return timings


def print_report(timings: Timings, status: dict[str, Any]) -> None:
    rows_out = [
        ("agent recommend: decision + page (re-rank when the pool changed)", timings.recommend),
        ("agent events batch (4 events) + re-rank of the pool", timings.events),
        ("bare ONNX Runtime: device re-ranker, same inputs", timings.bare_reranker),
        ("bare ONNX Runtime: request-value model, same features", timings.bare_value),
    ]
    if timings.bare_detector:
        rows_out.append(("bare ONNX Runtime: shift detector, same inputs", timings.bare_detector))
    print("| path (one thread, interleaved in one run) | p50 µs | p99 µs |\n|---|---|---|")
    for name, samples in rows_out:
        p50, p99 = pct(samples)
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")
    print(f"\nsteps {status['steps']}, paced cloud requests {status['cloud_requests']} "
          f"(rate {status['request_rate']:.3f} at budget 0.10)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    inputs = load_inputs(args.bundle, args.device, args.value_model, args.detector)
    agent, settings = build_agent(inputs)
    bare = BareModels(inputs.reranker, inputs.value, inputs.detector)
    print_report(run(agent, settings.feed.page_size, bare, args.steps), agent.status())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
