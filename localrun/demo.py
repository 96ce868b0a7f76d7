"""`make demo`: build the world, train the ranker on a small budget, print the held-out report."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from simulator.evaluation import TABLE_HEADER
from simulator.scales import SCALES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1, help="ranker training budget")
    parser.add_argument("--out", type=Path, default=Path("artifacts/demo"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # imported here so that `--help` answers without loading torch
    from cloud_service.recommender.artifacts import save_ranker
    from cloud_service.recommender.train import TrainConfig, ctcvr_auc, held_out_table, train_ranker
    from simulator.pipeline import build_experiment

    args = parse_args(argv)
    cfg = replace(SCALES[args.scale], seed=args.seed)
    progress = sys.stderr.isatty()
    print(f"Tandem demo: world scale={args.scale} seed={args.seed}", flush=True)
    exp = build_experiment(cfg, progress=progress)
    print(f"\nWorld statistics (generated in {exp.seconds:.1f} s)\n")
    print(exp.stats.table(), flush=True)
    start = time.perf_counter()
    model, fit = train_ranker(exp, TrainConfig(epochs=args.epochs, seed=args.seed), progress)
    seconds = time.perf_counter() - start
    manifest = save_ranker(args.out / "ranker", model, {"world": cfg.__dict__, "train": fit})
    test = exp.held_out.split.test
    print(
        f"\nRanker {manifest.version} trained for {args.epochs} epoch(s) in {seconds:.0f} s "
        f"(valid AUC {fit['best_valid_auc']:.4f}), saved to {args.out / 'ranker'}"
    )
    print(
        f"\nHeld-out recommenders (last 20 % of sessions by start time: {len(test):,} "
        f"impressions, {len(exp.held_out.task.session):,} sessions)\n"
    )
    print(TABLE_HEADER)
    for report in held_out_table(model, exp):
        print(report.row())
    print(f"\nDIN pCTCVR AUC on held-out purchases: {ctcvr_auc(model, exp):.4f}")
    print("\nNot in the demo yet: the cloud service, device agents and the simulated fleet.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
