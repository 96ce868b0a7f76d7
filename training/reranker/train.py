"""Trains the EdgeRec device re-ranker on the ranker's embedding rows and exports it to ONNX.

`python -m training.reranker.train --ranker artifacts/ranker --out artifacts/device`
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from simulator.metrics import gauc
from simulator.pipeline import Experiment, build_experiment
from tandem_core.artifacts import sha256_file, write_manifest
from tandem_core.models.din import DinRanker
from tandem_core.models.edgerec import EdgeRecConfig, EdgeReranker
from tandem_core.release import RERANKER, release_manifest
from tandem_core.signing import Signer
from training.ranker.artifacts import load_ranker, world_config
from training.ranker.bundle import item_rows
from training.ranker.scoring import rank
from training.reranker.data import (
    StepExamples,
    gather_rows,
    one_hot_actions,
    step_examples,
)

BEHAVIOR_LEN = 30
ONNX_FILE = "reranker.onnx"


@dataclass(frozen=True)
class DeviceTrainConfig:
    epochs: int = 3
    batch_size: int = 256
    lr: float = 3e-3
    seed: int = 0


def cloud_logits(model: DinRanker, exp: Experiment) -> list[np.ndarray]:
    """The ranker's pCTR logit of every logged impression, per split part."""
    held = exp.held_out
    out = []
    for part, hist in zip(
        held.split, (held.train_history, held.valid_history, held.test_history), strict=True
    ):
        ctr, _ = rank(model, hist, part.item[:, None])
        p = np.clip(ctr[:, 0], 1e-6, 1 - 1e-6)
        out.append(np.log(p / (1 - p)).astype(np.float32))
    return out


def batch_tensors(ex: StepExamples, rows: np.ndarray, idx: np.ndarray) -> list[torch.Tensor]:
    arrays = [
        gather_rows(rows, ex.behavior_items[idx]),
        one_hot_actions(ex.behavior_actions[idx]),
        gather_rows(rows, ex.candidates[idx]),
        ex.cloud_score[idx],
    ]
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def predict(model: EdgeReranker, ex: StepExamples, rows: np.ndarray) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for lo in range(0, len(ex), 2048):
            idx = np.arange(lo, min(lo + 2048, len(ex)))
            out.append(model(*batch_tensors(ex, rows, idx)).numpy())
    return np.concatenate(out)


def step_gauc(ex: StepExamples, scores: np.ndarray, mask: np.ndarray | None = None) -> float:
    """GAUC with one group per feed step: which of the shown items gets the click."""
    keep = ex.candidates >= 0
    if mask is not None:
        keep &= mask[:, None]
    groups = np.broadcast_to(np.arange(len(ex))[:, None], keep.shape)
    return gauc(ex.label[keep], scores[keep], groups[keep])


def train_reranker(
    train: StepExamples, valid: StepExamples, rows: np.ndarray, cfg: DeviceTrainConfig
) -> tuple[EdgeReranker, list[dict[str, float]]]:
    torch.manual_seed(cfg.seed)
    model = EdgeReranker(EdgeRecConfig(dim=rows.shape[1]))
    # training-only position bias (PAL, Guo et al., RecSys 2019): logged clicks depend on the
    # slot an item was shown in, which the re-ranker must not learn as relevance
    position_bias = torch.nn.Parameter(torch.zeros(train.position.max() + 1))
    opt = torch.optim.Adam([*model.parameters(), position_bias], lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    best, best_state, log = -1.0, None, []
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        for idx in np.array_split(
            rng.permutation(len(train)), max(1, len(train) // cfg.batch_size)
        ):
            logits = model(*batch_tensors(train, rows, idx))
            logits = logits + position_bias[torch.from_numpy(train.position[idx])]
            valid_cells = torch.from_numpy(train.candidates[idx] >= 0)
            target = torch.from_numpy(train.label[idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[valid_cells], target[valid_cells]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        score = step_gauc(valid, predict(model, valid, rows))
        log.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "valid_gauc": score})
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    return model.eval(), log


def export_onnx(model: EdgeReranker, path: Path) -> str:
    """Export with dynamic batch, candidate count and behaviour length; return the sha256."""
    d = model.cfg.dim
    example = (torch.zeros(2, 5, d), torch.zeros(2, 5, 3), torch.zeros(2, 7, d), torch.zeros(2, 7))
    example[1][:, -2:, 1] = 1.0
    torch.onnx.export(
        model, example, str(path), dynamo=False, opset_version=17,
        input_names=["behavior", "behavior_action", "candidates", "cloud_score"],
        output_names=["score"],
        dynamic_axes={
            "behavior": {0: "batch", 1: "events"}, "behavior_action": {0: "batch", 1: "events"},
            "candidates": {0: "batch", 1: "items"}, "cloud_score": {0: "batch", 1: "items"},
            "score": {0: "batch", 1: "items"},
        },
    )  # fmt: skip
    onnx.checker.check_model(onnx.load(str(path)))
    return sha256_file(path)


def write_device_artifact(
    out: Path,
    model: EdgeReranker,
    embedding_version: str,
    extra: dict[str, object],
    signer: Signer | None = None,
) -> dict[str, object]:
    """The re-ranker's version directory: ONNX + manifest (sha256 per file, signed if `signer`)."""
    out.mkdir(parents=True, exist_ok=True)
    digest = export_onnx(model, out / ONNX_FILE)
    manifest: dict[str, object] = {
        "version": "edgerec-" + digest[:12],
        "file": ONNX_FILE,
        "sha256": {ONNX_FILE: digest},
        "embedding_version": embedding_version,
        "dim": model.cfg.dim,
        "behavior_len": BEHAVIOR_LEN,
        "config": model.cfg.to_dict(),
        **extra,
    }
    manifest = release_manifest(manifest, RERANKER, signer)
    write_manifest(out, manifest)
    return manifest


def run(
    ranker_dir: Path,
    out: Path,
    cfg: DeviceTrainConfig,
    exp: Experiment | None = None,
    signer: Signer | None = None,
) -> dict[str, object]:
    """Train on the ranker's world (pass `exp` when it is already built) and export."""
    ranker, ranker_manifest = load_ranker(ranker_dir)
    world_cfg = world_config(ranker_manifest)
    exp = exp or build_experiment(world_cfg, progress=sys.stderr.isatty())
    rows = item_rows(ranker)
    scores = cloud_logits(ranker, exp)
    page = world_cfg.page_size
    parts = [  # the test part is not used here: eval_device judges on fresh held-out sessions
        step_examples(p, s, exp.traffic.steps, BEHAVIOR_LEN, page)
        for p, s in zip(exp.held_out.split, scores, strict=True)
    ]
    start = time.perf_counter()
    model, log = train_reranker(parts[0], parts[1], rows, cfg)
    seconds = time.perf_counter() - start
    manifest = write_device_artifact(
        out,
        model,
        ranker_manifest.embedding_version,
        {"train": {"epochs": log, "seconds": round(seconds, 1)}},
        signer,
    )
    print(json.dumps({k: manifest[k] for k in ("version", "sha256", "embedding_version")}))
    size = (out / ONNX_FILE).stat().st_size
    print(
        f"trained in {seconds:.0f} s; best valid step-GAUC {max(e['valid_gauc'] for e in log):.4f}"
        f" (logged pages, position-biased); ONNX {size:,} bytes (held out: reranker.evaluate)"
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ranker", type=Path, default=Path("artifacts/ranker"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/device"))
    parser.add_argument("--epochs", type=int, default=DeviceTrainConfig.epochs)
    parser.add_argument(
        "--release-key", type=Path, default=None,
        help="sign with this release key (default $TANDEM_RELEASE_KEY_FILE)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from training.release import signer_from

    signer = signer_from(args.release_key)
    run(args.ranker, args.out, DeviceTrainConfig(epochs=args.epochs), signer=signer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
