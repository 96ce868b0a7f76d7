"""The models job: the world's ranker (+ serving bundle), device re-ranker and request-value model.

`python -m training.models_job --out DIR` is what a deployment's one-shot `models` service runs
and what `make demo` and the load test call first; models already in DIR that were trained on
the same world are reused (`--retrain` forces training).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from simulator.scales import SCALES
from simulator.world import WorldConfig

VALUE_MODEL = Path("artifacts/policy/request_value.onnx")


@dataclass(frozen=True)
class ModelSpec:
    """What to prepare: the world (scale, seed), the ranker's epochs, where, and how."""

    scale: str = "default"
    seed: int = 0
    epochs: int = 1
    out: Path = Path("artifacts/demo")
    retrain: bool = False
    untrained: bool = False  # tiny random-init models: checks the plumbing, not quality


@dataclass(frozen=True)
class Models:
    bundle: Path
    device: Path
    value_model: Path | None
    world: WorldConfig


def train_models(spec: ModelSpec, cfg: WorldConfig) -> Models:
    """World statistics, the ranker's held-out table, then the device and value models."""
    from simulator.evaluation import TABLE_HEADER
    from simulator.pipeline import build_experiment
    from training.ranker.artifacts import save_ranker
    from training.ranker.train import (
        TrainConfig,
        ctcvr_auc,
        held_out_table,
        save_serving_bundle,
        train_ranker,
    )
    from training.reranker import train as train_device

    progress = sys.stderr.isatty()
    exp = build_experiment(cfg, progress=progress)
    print(f"\nWorld statistics (generated in {exp.seconds:.1f} s)\n")
    print(exp.stats.table(), flush=True)
    start = time.perf_counter()
    model, fit = train_ranker(exp, TrainConfig(epochs=spec.epochs, seed=spec.seed), progress)
    ranker_dir = spec.out / "ranker"
    manifest = save_ranker(ranker_dir, model, {"world": cfg.__dict__, "train": fit})
    save_serving_bundle(ranker_dir, model, exp, manifest)
    print(
        f"\nRanker {manifest.version} trained for {spec.epochs} epoch(s) in "
        f"{time.perf_counter() - start:.0f} s (valid AUC {fit['best_valid_auc']:.4f})"
    )
    test = exp.held_out.split.test
    print(f"\nHeld-out recommenders (last 20 % of sessions: {len(test):,} impressions)\n")
    print(TABLE_HEADER)
    for report in held_out_table(model, exp):
        print(report.row())
    print(f"\nDIN pCTCVR AUC on held-out purchases: {ctcvr_auc(model, exp):.4f}\n", flush=True)
    train_device.run(ranker_dir, spec.out / "device", train_device.DeviceTrainConfig(), exp)
    if not VALUE_MODEL.exists():
        print(
            "\nTraining the request-value model (python -m training.policy.train) ...", flush=True
        )
        subprocess.run([sys.executable, "-m", "training.policy.train"], check=True)
    return Models(ranker_dir / "serving", spec.out / "device", VALUE_MODEL, cfg)


def prepare_models(spec: ModelSpec) -> Models:
    """The models in `spec.out`: reused when they were trained on the same world, else trained."""
    cfg = replace(SCALES[spec.scale], seed=spec.seed)
    if spec.untrained:
        from training.tiny import write_tiny_artifacts

        dirs = write_tiny_artifacts(spec.out / "tiny", seed=spec.seed)
        return Models(dirs.bundle, dirs.device, None, replace(SCALES["tiny"], seed=spec.seed))
    models = Models(spec.out / "ranker" / "serving", spec.out / "device", VALUE_MODEL, cfg)
    ready = all(p.exists() for p in (models.bundle, models.device, VALUE_MODEL))
    if ready and not spec.retrain and _trained_on(models.bundle.parent) == cfg:
        print(f"Reusing the models in {spec.out} (--retrain to train them again)", flush=True)
        return models
    return train_models(spec, cfg)


def _trained_on(ranker_dir: Path) -> WorldConfig | None:
    from training.ranker.artifacts import read_manifest, world_config

    try:
        return world_config(read_manifest(ranker_dir))
    except (OSError, KeyError, ValueError, TypeError):
        return None


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """The ModelSpec flags, for this command and for the demo that runs it first."""
    p.add_argument("--scale", choices=sorted(SCALES), default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1, help="ranker training budget")
    p.add_argument("--out", type=Path, default=Path("artifacts/demo"))
    p.add_argument("--retrain", action="store_true", help="train even if models exist")
    p.add_argument("--untrained", action="store_true", help="tiny random-init models (tests)")


def spec_of(a: argparse.Namespace) -> ModelSpec:
    return ModelSpec(a.scale, a.seed, a.epochs, a.out, a.retrain, a.untrained)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_spec_arguments(p)
    models = prepare_models(spec_of(p.parse_args(argv)))
    print(f"models: bundle {models.bundle}, device model {models.device}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
