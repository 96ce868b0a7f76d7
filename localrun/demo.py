"""`make demo`: build the world, evaluate the recommenders on a held-out split, print the report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from simulator.evaluation import TABLE_HEADER
from simulator.pipeline import baseline_scorers, build_experiment, evaluate_all
from simulator.world import WorldConfig

SCALES = {
    "default": WorldConfig(),
    "small": WorldConfig(n_users=600, n_items=8_000, n_categories=24),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = replace(SCALES[args.scale], seed=args.seed)
    print(f"Tandem demo: world scale={args.scale} seed={args.seed}", flush=True)
    exp = build_experiment(cfg, progress=sys.stderr.isatty())
    print(f"\nWorld statistics (generated in {exp.seconds:.1f} s)\n")
    print(exp.stats.table())
    reports = evaluate_all(baseline_scorers(exp.held_out.split, cfg.n_items), exp.held_out)
    test = exp.held_out.split.test
    print(
        f"\nHeld-out recommenders (last 20 % of sessions by start time: {len(test):,} "
        f"impressions, {len(exp.held_out.task.session):,} sessions)\n"
    )
    print(TABLE_HEADER)
    for report in reports:
        print(report.row())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
