"""Distils the interest encoder from a trained ranker on its world's logs and writes its artifact.

`python -m training.private_mode.train --ranker artifacts/ranker --out artifacts/interest_encoder`
(the models job calls `train_encoder` itself with the experiment it already built).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from simulator.pipeline import Experiment, build_experiment
from tandem_core.models.din import DinRanker
from tandem_core.signing import Signer
from training.private_mode.distill import DistillConfig, DistillData, distill_encoder
from training.private_mode.export import ENCODER_ONNX, write_encoder_artifact
from training.ranker.artifacts import load_ranker, world_config
from training.ranker.bundle import item_rows
from training.ranker.log_examples import negative_sampling


def log_data(exp: Experiment, n_items: int) -> tuple[DistillData, DistillData]:
    """The train and validation parts of the ranker's logs as distillation data."""
    held = exp.held_out
    sampling = negative_sampling(held.split.train, n_items)
    return (
        DistillData(held.train_history, held.split.train.item, sampling),
        DistillData(held.valid_history, held.split.valid.item, sampling),
    )


def train_encoder(
    ranker: DinRanker,
    exp: Experiment,
    out: Path,
    versions: tuple[str, str],
    cfg: DistillConfig,
    signer: Signer | None = None,
) -> dict[str, object]:
    """Distil, then write `out` (a new version directory); `versions`: (ranker, embedding)."""
    start = time.perf_counter()
    train, valid = log_data(exp, ranker.cfg.n_items)
    encoder, log = distill_encoder(ranker, item_rows(ranker), train, valid, cfg)
    seconds = round(time.perf_counter() - start, 1)
    extra: dict[str, object] = {"distill": {"epochs": log, "seconds": seconds, **cfg.__dict__}}
    return write_encoder_artifact(out, encoder, versions[1], versions[0], extra, signer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranker", type=Path, default=Path("artifacts/ranker"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/interest_encoder"))
    parser.add_argument("--interests", type=int, default=DistillConfig.n_interests)
    parser.add_argument("--epochs", type=int, default=DistillConfig.epochs)
    parser.add_argument(
        "--release-key", type=Path, default=None,
        help="sign with this release key (default $TANDEM_RELEASE_KEY_FILE)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from training.release import signer_from

    ranker, manifest = load_ranker(args.ranker)
    exp = build_experiment(world_config(manifest), progress=sys.stderr.isatty())
    cfg = DistillConfig(n_interests=args.interests, epochs=args.epochs)
    written = train_encoder(
        ranker, exp, args.out, (manifest.version, manifest.embedding_version), cfg,
        signer_from(args.release_key),
    )  # fmt: skip
    size = (args.out / ENCODER_ONNX).stat().st_size
    print(json.dumps({k: written[k] for k in ("version", "embedding_version", "ranker_version")}))
    print(f"interest encoder ONNX {size:,} bytes -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
