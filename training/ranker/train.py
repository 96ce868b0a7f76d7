"""Trains the DIN ranker on the world's log, early-stopped on the validation split, and saves it.

`python -m training.ranker.train --out artifacts/ranker [--scale small|default]`
`python -m training.ranker.train --logs PATH --registry DIR`: retrain from logs, gated
(`training.ranker.from_logs`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from simulator.evaluation import TABLE_HEADER, RankerReport
from simulator.logs import Impressions
from simulator.metrics import auc
from simulator.pipeline import (
    HISTORY_LEN,
    Experiment,
    baseline_scorers,
    build_experiment,
    evaluate_all,
)
from simulator.scales import SCALES
from tandem_core.models.din import DinConfig, DinRanker, esmm_loss
from training.gate import REFUSED_EXIT, add_validation_arguments, print_report, verifier_from
from training.ranker.artifacts import RankerManifest, save_ranker
from training.ranker.bundle import write_bundle
from training.ranker.scoring import DinScorer, rank


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    batch_size: int = 1024
    lr: float = 4e-3
    negatives: int = 1  # unexposed items sampled per impression, labelled "no click"
    weight_decay: float = 1e-6
    patience: int = 1
    seed: int = 0
    threads: int = 2


def _tensors(imp: Impressions, history: np.ndarray) -> list[torch.Tensor]:
    return [
        torch.from_numpy(history.astype(np.int64)),
        torch.from_numpy(imp.item.astype(np.int64)),
        torch.from_numpy(imp.position.astype(np.int64)),
        torch.from_numpy(imp.click.astype(np.float32)),
        torch.from_numpy(imp.purchase.astype(np.float32)),
    ]


def with_sampled_negatives(
    data: list[torch.Tensor], sampling: torch.Tensor, k: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Add k catalog items per impression as non-clicks, drawn by training popularity.

    The log only holds items the cloud chose to show; without these the ranker never learns
    that an arbitrary catalog item is a poor candidate, which retrieval asks it to judge.
    """
    if k == 0:
        return data
    hist, item, pos, click, buy = data
    n = len(item) * k
    neg = torch.multinomial(sampling, n, replacement=True, generator=gen)
    zeros = torch.zeros(n)
    return [
        torch.cat([hist, hist.repeat(k, 1)]), torch.cat([item, neg]),
        torch.cat([pos, pos.repeat(k)]), torch.cat([click, zeros]), torch.cat([buy, zeros]),
    ]  # fmt: skip


def _epoch(
    model: DinRanker,
    opt: torch.optim.Optimizer,
    data: list[torch.Tensor],
    cfg: TrainConfig,
    gen: torch.Generator,
    epoch: int,
    progress: bool,
) -> float:
    model.train()
    order = torch.randperm(len(data[0]), generator=gen)
    losses = []
    batches = range(0, len(order), cfg.batch_size)
    for lo in tqdm(batches, desc=f"epoch {epoch}", disable=not progress, leave=False):
        idx = order[lo : lo + cfg.batch_size]
        hist, item, pos, click, buy = (t[idx] for t in data)
        loss = esmm_loss(model, hist, item[:, None], pos[:, None], click[:, None], buy[:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def valid_auc(model: DinRanker, imp: Impressions, history: np.ndarray) -> float:
    model.eval()
    ctr, _ = rank(model, history, imp.item[:, None])
    return auc(imp.click.astype(int), ctr[:, 0])


def train_ranker(
    exp: Experiment, cfg: TrainConfig, progress: bool = False
) -> tuple[DinRanker, dict]:
    """Fit on the train split, keep the epoch with the best validation AUC."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    world, held = exp.world, exp.held_out
    model = DinRanker(
        DinConfig(n_items=world.cfg.n_items, n_categories=world.cfg.n_categories),
        torch.from_numpy(world.catalog.category),
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    logged = _tensors(held.split.train, held.train_history)
    clicks = np.bincount(
        held.split.train.item[held.split.train.click.astype(bool)], minlength=world.cfg.n_items
    )
    sampling = torch.from_numpy(np.sqrt(clicks + 1.0))
    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_state, history, stale = -1.0, None, [], 0
    for epoch in range(cfg.epochs):
        data = with_sampled_negatives(logged, sampling, cfg.negatives, gen)
        loss = _epoch(model, opt, data, cfg, gen, epoch, progress)
        score = valid_auc(model, held.split.valid, held.valid_history)
        history.append({"epoch": epoch, "train_loss": loss, "valid_auc": score})
        if progress:
            print(f"epoch {epoch}: train loss {loss:.4f}  valid AUC {score:.4f}", flush=True)
        if score > best:
            best, best_state, stale = (
                score,
                {k: v.clone() for k, v in model.state_dict().items()},
                0,
            )
        else:
            stale += 1
            if stale > cfg.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return model, {"epochs": history, "best_valid_auc": best}


def ctcvr_auc(model: DinRanker, exp: Experiment) -> float:
    test = exp.held_out.split.test
    _, ctcvr = rank(model, exp.held_out.test_history, test.item[:, None])
    return auc(test.purchase.astype(int), ctcvr[:, 0])


def held_out_table(model: DinRanker, exp: Experiment) -> list[RankerReport]:
    scorers = [*baseline_scorers(exp.held_out.split, exp.world.cfg.n_items), DinScorer(model)]
    return evaluate_all(scorers, exp.held_out)


def run(out: Path, scale: str, seed: int, cfg: TrainConfig, progress: bool) -> RankerManifest:
    world_cfg = replace(SCALES[scale], seed=seed)
    exp = build_experiment(world_cfg, progress=progress)
    start = time.perf_counter()
    model, fit = train_ranker(exp, replace(cfg, seed=seed), progress=progress)
    train_seconds = time.perf_counter() - start
    reports = held_out_table(model, exp)
    extra = {
        "world": world_cfg.__dict__,
        "train": {**cfg.__dict__, **fit, "seconds": round(train_seconds, 1)},
        "held_out": [r.__dict__ for r in reports],
        "ctcvr_auc": ctcvr_auc(model, exp),
    }
    manifest = save_ranker(out, model, extra)
    save_serving_bundle(out, model, exp, manifest)
    print(f"\nRanker {manifest.version} (embeddings {manifest.embedding_version}) -> {out}")
    print(f"trained in {train_seconds:.0f} s; held-out (last 20 % of sessions):\n")
    print(TABLE_HEADER)
    for r in reports:
        print(r.row())
    print(f"\npCTCVR AUC on purchases: {extra['ctcvr_auc']:.4f}")
    return manifest


def save_serving_bundle(
    out: Path, model: DinRanker, exp: Experiment, manifest: RankerManifest
) -> Path:
    """What the cloud service serves from: `<out>/serving` (ONNX ranker + tables)."""
    bundle_dir = out / "serving"
    write_bundle(
        bundle_dir, model, exp.held_out.split.train, manifest.version,
        manifest.embedding_version, HISTORY_LEN,
    )  # fmt: skip
    return bundle_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("artifacts/ranker"))
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument(
        "--logs",
        type=Path,
        default=None,
        help="retrain from these logs (training.ranker.from_logs) and gate it",
    )
    parser.add_argument(
        "--registry",
        type=Path,
        default=Path("artifacts/registry"),
        help="with --logs: the registry whose ranker_bundle is served",
    )
    parser.add_argument(
        "--release-key",
        type=Path,
        default=None,
        help="with --logs: sign the candidate (default $TANDEM_RELEASE_KEY_FILE)",
    )
    add_validation_arguments(parser, world=False)  # fmt: skip
    args = parser.parse_args(argv)
    if args.logs is None:
        run(args.out, args.scale, args.seed, TrainConfig(epochs=args.epochs), progress=True)
        return 0
    from training.ranker.from_logs import retrain_from_logs
    from training.release import signer_from

    report = retrain_from_logs(
        args.logs, args.registry, signer_from(args.release_key),
        TrainConfig(epochs=args.epochs, seed=args.seed), args.valid_frac, args.tolerance,
        verifier_from(args),
    )  # fmt: skip
    print_report(report)
    return 0 if report.promoted else REFUSED_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
