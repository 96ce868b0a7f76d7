"""What the private Recommend costs: held-out AUC/GAUC and reward per step in the world, per seed.

`python -m training.private_mode.evaluate [--scale small] [--seeds 0 1 2] [--sessions 400]`

Per seed: a world and its logs, the DIN ranker trained on them, the encoder distilled from it on
the same logs; then the held-out table (last 20 % of sessions) of the raw DIN, the private mode
and its no-encoder fallback, and a device loop through the cloud's real serving code in each
mode (training.private_mode.world_loop). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cloud_service.recommender.retrieval import RetrievalConfig
from cloud_service.recommender.serving import OnlineRecommender
from cloud_service.registry.bundle import load_bundle
from device_agent.inference.interest_encoder import OnnxInterestEncoder
from simulator.baselines import Scorer
from simulator.evaluation import RankerReport
from simulator.pipeline import HISTORY_LEN, Experiment, build_experiment, evaluate_all
from simulator.scales import SCALES
from tandem_core.models.din import DinRanker
from training.private_mode.distill import DistillConfig, distill_encoder
from training.private_mode.encoder import InterestEncoder
from training.private_mode.export import export_encoder
from training.private_mode.scoring import (
    MeanRowScorer,
    NoHistoryScorer,
    PrivateScorer,
    reidentified,
)
from training.private_mode.train import log_data
from training.private_mode.world_loop import MODES, LoopConfig, ModeCloud, reward_per_step
from training.ranker.bundle import item_rows, write_bundle
from training.ranker.scoring import DinScorer
from training.ranker.train import TrainConfig, train_ranker


@dataclass(frozen=True)
class SeedResult:
    seed: int
    reports: list[RankerReport]  # raw, private, fallback, no history
    rewards: dict[str, np.ndarray]  # mode → reward per step of each session
    privacy: dict[str, float]
    seconds: float


def serving_stack(
    exp: Experiment, teacher: DinRanker, encoder: InterestEncoder, tmp: Path
) -> tuple[OnlineRecommender, OnnxInterestEncoder]:
    """The cloud's recommender over a freshly written bundle, and the device's ONNX encoder."""
    write_bundle(tmp / "bundle", teacher, exp.held_out.split.train, "din-eval", "", HISTORY_LEN)
    recommender = OnlineRecommender(load_bundle(tmp / "bundle"), RetrievalConfig())
    export_encoder(encoder, tmp / "encoder.onnx")
    device = OnnxInterestEncoder((tmp / "encoder.onnx").read_bytes(), "eval")
    return recommender, device


def run_seed(seed: int, args: argparse.Namespace) -> SeedResult:
    start = time.perf_counter()
    exp = build_experiment(replace(SCALES[args.scale], seed=seed))
    teacher, _ = train_ranker(exp, TrainConfig(epochs=args.epochs, seed=seed))
    table = item_rows(teacher)
    train, valid = log_data(exp, teacher.cfg.n_items)
    cfg = DistillConfig(n_interests=args.interests, epochs=args.distill_epochs, seed=seed)
    encoder, _ = distill_encoder(teacher, table, train, valid, cfg)
    scorers: list[Scorer] = [
        DinScorer(teacher), PrivateScorer(teacher, encoder, table), MeanRowScorer(teacher, table),
        NoHistoryScorer(teacher),
    ]  # fmt: skip
    reports = evaluate_all(scorers, exp.held_out)
    privacy = reidentified(encoder, table, exp.held_out.test_history, 2000, seed)
    loop = LoopConfig(sessions=args.sessions, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        recommender, device = serving_stack(exp, teacher, encoder, Path(tmp))
        rewards = {
            mode: reward_per_step(exp.world, ModeCloud(recommender, device, mode), loop)
            for mode in MODES
        }
    return SeedResult(seed, reports, rewards, privacy, time.perf_counter() - start)


def tables(results: list[SeedResult]) -> str:
    """Per-seed rows, then the mean over seeds with the paired difference to the raw mode."""
    lines = ["| seed | model | AUC | GAUC | NDCG@10 | Recall@50 |", "|---|---|---|---|---|---|"]
    for r in results:
        for rep in r.reports:
            lines.append(f"| {r.seed} " + rep.row())
    lines += [
        "",
        "| model | mean AUC | mean GAUC | Δ GAUC vs raw (min, max) |",
        "|---|---|---|---|",
    ]
    for i, name in enumerate(rep.name for rep in results[0].reports):
        auc = np.mean([r.reports[i].auc for r in results])
        g = np.array([r.reports[i].gauc for r in results])
        d = g - np.array([r.reports[0].gauc for r in results])
        lines.append(f"| {name} | {auc:.4f} | {g.mean():.4f} | {d.mean():+.4f} "
                     f"({d.min():+.4f}, {d.max():+.4f}) |")  # fmt: skip
    lines += ["", "| seed | " + " | ".join(f"{m} reward/step" for m in MODES) + " |",
              "|---|" + "---|" * len(MODES)]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r.seed} | " + " | ".join(f"{r.rewards[m].mean():.4f}" for m in MODES) + " |"
        )
    lines += ["", "| mode | reward/step (mean of seeds) | paired Δ vs raw ± 1.96 s.e. "
              "(all sessions) |", "|---|---|---|"]  # fmt: skip
    for m in MODES:
        diff = np.concatenate([r.rewards[m] - r.rewards["raw"] for r in results])
        half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        mean = np.mean([r.rewards[m].mean() for r in results])
        lines.append(f"| {m} | {mean:.4f} | {diff.mean():+.4f} ± {half:.4f} |")
    lines += ["", "| seed | pseudo-history rows on a click | clicks recovered (pseudo-history) | "
              "mean row on a click | clicks recovered (mean row) | seconds |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        p = r.privacy
        lines.append(f"| {r.seed} | {p['set_rows_on_a_click']:.3f} | "
                     f"{p['set_clicks_recovered']:.3f} | {p['mean_rows_on_a_click']:.3f} | "
                     f"{p['mean_clicks_recovered']:.3f} | {r.seconds:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1, help="ranker epochs")
    parser.add_argument("--distill-epochs", type=int, default=3)
    parser.add_argument("--interests", type=int, default=DistillConfig.n_interests)
    parser.add_argument("--sessions", type=int, default=LoopConfig.sessions)
    args = parser.parse_args(argv)
    results = []
    for seed in args.seeds:
        results.append(run_seed(seed, args))
        print(f"seed {seed} done in {results[-1].seconds:.0f} s", flush=True)
    print(f"\n{args.scale} world, seeds {args.seeds}, M = {args.interests}, ranker epochs "
          f"{args.epochs}, distillation epochs {args.distill_epochs}, {args.sessions} sessions "
          f"× {LoopConfig.steps} steps per seed and mode\n")  # fmt: skip
    print(tables(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
