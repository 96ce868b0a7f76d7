"""Held-out evaluation of the device re-ranker in the world, against the true click model.

Logged clicks are biased by the slot an item was shown in, so re-ranking is judged on fresh
held-out sessions instead: at every step the remaining pool is ranked by the cloud order and by
the device model, and both are scored against the world's position-free click probabilities.

`python -m training.reranker.evaluate --ranker artifacts/ranker \
    --device artifacts/device`
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device_agent.inference.reranker import OnnxReranker
from simulator.cloud import CLICK, ReferenceCloud
from simulator.metrics import gauc
from simulator.session import SessionState, feed_step, start_session
from simulator.world import World
from tandem_core.artifacts import read_manifest
from tandem_core.behavior import behavior_inputs, gather_rows
from tandem_core.models.din import DinRanker
from tandem_core.release import resolve
from training.ranker.artifacts import load_ranker, world_config
from training.ranker.bundle import item_rows
from training.ranker.scoring import rank
from training.reranker.train import BEHAVIOR_LEN


@dataclass
class Record:
    """Per-candidate rows of every evaluated step."""

    group: list[np.ndarray] = field(default_factory=list)
    label: list[np.ndarray] = field(default_factory=list)
    cloud: list[np.ndarray] = field(default_factory=list)
    device: list[np.ndarray] = field(default_factory=list)
    changed: list[bool] = field(default_factory=list)
    page_reward: list[tuple[float, float]] = field(default_factory=list)  # (cloud, device)


def device_inputs(
    state: SessionState, pool: np.ndarray, rows: np.ndarray, ranker: DinRanker
) -> tuple[np.ndarray, ...]:
    behavior, behavior_action = behavior_inputs(
        rows, [f.item for f in state.feedback], [f.action for f in state.feedback], BEHAVIOR_LEN
    )
    clicks = np.array([f.item for f in state.feedback if f.action >= CLICK][-BEHAVIOR_LEN:])
    history = np.full((1, BEHAVIOR_LEN), -1, dtype=np.int64)
    if len(clicks):
        history[0, -len(clicks) :] = clicks
    p, _ = rank(ranker, history, pool[None, :])
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return (
        behavior, behavior_action,
        gather_rows(rows, pool[None, :]), np.log(p / (1 - p)).astype(np.float32),
    )  # fmt: skip


def evaluate_in_world(
    world: World, ranker: DinRanker, reranker: OnnxReranker, n_sessions: int, seed: int
) -> Record:
    cloud, rows, rec = ReferenceCloud(world), item_rows(ranker), Record()
    rng = np.random.default_rng([seed, 7])

    def observe(state: SessionState, pool: np.ndarray) -> np.ndarray:
        if state.step == 0 or len(pool) < 2:
            return pool
        scores = reranker.score(*device_inputs(state, pool, rows, ranker))[0]
        truth = world.attraction(state.user, state.intent, state.interest, pool)
        g = len(rec.changed)
        rec.group.append(np.full(len(pool), g))
        rec.label.append(rng.random(len(pool)) < truth)
        rec.cloud.append(-np.arange(len(pool), dtype=np.float64))
        rec.device.append(scores)
        rec.changed.append(state.intent != state.pool_intent)
        page = world.cfg.page_size
        device_page = pool[np.argsort(-scores, kind="stable")[:page]]
        rec.page_reward.append((
            world.expected_reward(state.user, state.intent, state.interest, pool[:page]),
            world.expected_reward(state.user, state.intent, state.interest, device_page),
        ))  # fmt: skip
        return pool  # the world keeps the cloud order; this only observes

    for k in range(n_sessions):
        user = int(rng.integers(world.cfg.n_users))
        state = start_session(world, user, seed=int(rng.integers(2**62)))
        for _ in range(world.cfg.max_session_steps // 2):
            feed_step(world, cloud, state, refresh=bool(rng.random() < 0.3), rerank=observe)
        del k
    return rec


def summarise(rec: Record) -> dict[str, float]:
    changed = np.array(rec.changed)
    out: dict[str, float] = {"steps": float(len(changed)), "steps_changed": float(changed.sum())}
    group, label = np.concatenate(rec.group), np.concatenate(rec.label)
    cells_changed = changed[group]
    rewards = np.array(rec.page_reward)
    for name, mask in (("all", np.ones_like(cells_changed)), ("intent_changed", cells_changed)):
        for who, scores in (("cloud_order", rec.cloud), ("device", rec.device)):
            s = np.concatenate(scores)
            out[f"{name}_{who}_gauc"] = gauc(label[mask], s[mask], group[mask])
        steps = changed if name == "intent_changed" else np.ones(len(changed), bool)
        out[f"{name}_page_reward_cloud"] = float(rewards[steps, 0].mean())
        out[f"{name}_page_reward_device"] = float(rewards[steps, 1].mean())
    return out


def latency(reranker: OnnxReranker, dim: int, n: int = 2000) -> dict[str, float]:
    """Single-request latency: batch 1, 48 candidates, 30 events, one thread."""
    rng = np.random.default_rng(0)
    args = (
        rng.normal(size=(1, 30, dim)),
        np.eye(3)[rng.integers(0, 3, (1, 30))],
        rng.normal(size=(1, 48, dim)),
        rng.normal(size=(1, 48)),
    )
    for _ in range(100):
        reranker.score(*args)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        reranker.score(*args)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ranker", type=Path, default=Path("artifacts/ranker"))
    parser.add_argument("--device", type=Path, default=Path("artifacts/device"))
    parser.add_argument("--sessions", type=int, default=600)
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args(argv)
    ranker, manifest = load_ranker(args.ranker)
    device_dir = resolve(args.device)  # a registry kind directory or one version directory
    dev = read_manifest(device_dir)
    digest = dev["sha256"][dev["file"]] if isinstance(dev["sha256"], dict) else dev["sha256"]
    reranker = OnnxReranker.from_file(device_dir / dev["file"], digest, dev["version"])
    world = World(world_config(manifest))
    result = summarise(evaluate_in_world(world, ranker, reranker, args.sessions, args.seed))
    result.update(latency(reranker, int(dev["dim"])))
    result["onnx_bytes"] = float((device_dir / dev["file"]).stat().st_size)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
