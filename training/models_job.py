"""The models job: the world's ranker (+ serving bundle), device re-ranker, request-value model
and the private Recommend's interest encoder.

`python -m training.models_job --out DIR` is what a deployment's one-shot `models` service runs
and what `make demo` and the load test call first; models already in DIR that were trained on
the same world are reused (`--retrain` forces training). Every model is signed by the release
key and made current in `DIR/registry/<kind>`; the public key the servers trust is printed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simulator.scales import SCALES
from simulator.world import WorldConfig

VALUE_MODEL = Path("policy/request_value.onnx")  # under the spec's out directory
GATE_VALIDATION = Path("gate_validation.npz")  # the held-out validation split the gate scores on
INTEREST_ENCODER_DIR = Path("interest_encoder")  # under the spec's out directory


@dataclass(frozen=True)
class ModelSpec:
    """What to prepare: the world (scale, seed), the ranker's epochs, where, and how."""

    scale: str = "default"
    seed: int = 0
    epochs: int = 1
    out: Path = Path("artifacts/demo")
    retrain: bool = False
    untrained: bool = False  # tiny random-init models: checks the plumbing, not quality
    # the release key (made there on first use); None: TANDEM_RELEASE_KEY_FILE, else a
    # development key in `<out>/release`
    release_key: Path | None = None


@dataclass(frozen=True)
class Models:
    """Registry kind directories (`<out>/registry/<kind>`, signed versions + `current`)."""

    bundle: Path
    device: Path
    value_model: Path | None
    world: WorldConfig
    public_key: Path | None = None  # the release public key the servers trust
    interest_encoder: Path | None = None  # the private Recommend's encoder, when trained


def train_models(spec: ModelSpec, cfg: WorldConfig) -> Models:
    """World statistics, the ranker's held-out table, then the device and value models."""
    from simulator.evaluation import TABLE_HEADER
    from simulator.pipeline import build_experiment
    from training.gate import held_out_validation, save_validation
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
    save_validation(held_out_validation(exp.held_out, cfg), cfg, spec.out / GATE_VALIDATION)
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
    encoder = train_interest_encoder(spec, model, exp, manifest)
    value_model = spec.out / VALUE_MODEL
    if not value_model.exists():
        print("\nTraining the request-value model (training.policy.train) ...", flush=True)
        out = str(value_model.parent)
        subprocess.run(  # from simulated fleet logs of this world (no rollouts: no truth)
            [sys.executable, "-m", "training.policy.train", "--out", out, "--world", "default",
             "--rollouts", "0", "--other-worlds", ""], check=True,
        )  # fmt: skip
    return Models(
        ranker_dir / "serving", spec.out / "device", value_model, cfg, interest_encoder=encoder
    )


def train_interest_encoder(spec: ModelSpec, model: Any, exp: Any, manifest: Any) -> Path:
    """The private Recommend's encoder, distilled from `model` on the experiment's logs."""
    from training.private_mode.distill import DistillConfig
    from training.private_mode.train import train_encoder

    out = spec.out / INTEREST_ENCODER_DIR
    print("\nDistilling the interest encoder (training.private_mode) ...", flush=True)
    versions = (manifest.version, manifest.embedding_version)
    written = train_encoder(model, exp, out, versions, DistillConfig(seed=spec.seed))
    print(f"interest encoder {written['version']} -> {out}", flush=True)
    return out


def serving_key(spec: ModelSpec) -> tuple[Any, Path]:
    """The release signer, and its public key copied to `<out>/release.pub`: the one file of
    the key the serving processes read (the private key never leaves where this job runs)."""
    from training.release import release_signer

    signer, public_key = release_signer(spec.release_key, spec.out / "release")
    shared = spec.out / "release.pub"
    if public_key.resolve() != shared.resolve():
        shutil.copyfile(public_key, shared)
    return signer, shared


def release_models(trained: Models, spec: ModelSpec) -> Models:
    """Sign the trained models with the release key and make them current in the registry
    (`<out>/registry`); a version already there is made current again, not copied twice."""
    from tandem_core.release import INTEREST_ENCODER, RANKER_BUNDLE, RERANKER
    from tandem_core.release import VALUE_MODEL as VALUE_KIND
    from training.release import release_copy, release_value_model

    signer, public_key = serving_key(spec)
    registry = spec.out / "registry"
    release_copy(registry / RANKER_BUNDLE, trained.bundle, RANKER_BUNDLE, signer)
    release_copy(registry / RERANKER, trained.device, RERANKER, signer)
    value = None
    if trained.value_model is not None:
        release_value_model(registry / VALUE_KIND, trained.value_model, signer)
        value = registry / VALUE_KIND
    encoder = None
    if trained.interest_encoder is not None:
        release_copy(
            registry / INTEREST_ENCODER, trained.interest_encoder, INTEREST_ENCODER, signer
        )
        encoder = registry / INTEREST_ENCODER
    return Models(
        registry / RANKER_BUNDLE, registry / RERANKER, value, trained.world, public_key, encoder
    )


def prepare_models(spec: ModelSpec) -> Models:
    """The models in `spec.out`: reused when they were trained on the same world, else trained."""
    cfg = replace(SCALES[spec.scale], seed=spec.seed)
    if spec.untrained:
        from training.tiny import write_tiny_artifacts

        signer, public_key = serving_key(spec)
        dirs = write_tiny_artifacts(spec.out / "tiny", seed=spec.seed, signer=signer)
        tiny = replace(SCALES["tiny"], seed=spec.seed)
        return Models(dirs.bundle, dirs.device, None, tiny, public_key)
    value_model = spec.out / VALUE_MODEL
    encoder = spec.out / INTEREST_ENCODER_DIR
    models = Models(
        spec.out / "ranker" / "serving", spec.out / "device", value_model, cfg,
        interest_encoder=encoder if encoder.exists() else None,
    )  # fmt: skip
    ready = all(p.exists() for p in (models.bundle, models.device, value_model))
    if ready and not spec.retrain and _trained_on(models.bundle.parent) == cfg:
        print(f"Reusing the models in {spec.out} (--retrain to train them again)", flush=True)
        return release_models(models, spec)
    return release_models(train_models(spec, cfg), spec)


def _trained_on(ranker_dir: Path) -> WorldConfig | None:
    from training.ranker.artifacts import read_ranker_manifest, world_config

    try:
        return world_config(read_ranker_manifest(ranker_dir))
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
    p.add_argument(
        "--release-key", type=Path, default=None,
        help="the release private key (made if missing; default $TANDEM_RELEASE_KEY_FILE, "
        "else a development key in OUT/release)",
    )  # fmt: skip


def spec_of(a: argparse.Namespace) -> ModelSpec:
    return ModelSpec(a.scale, a.seed, a.epochs, a.out, a.retrain, a.untrained, a.release_key)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_spec_arguments(p)
    models = prepare_models(spec_of(p.parse_args(argv)))
    print(f"models: bundle {models.bundle}, device model {models.device}, value model "
          f"{models.value_model}, release public key {models.public_key}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
