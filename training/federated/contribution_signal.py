"""`python -m training.federated.contribution_signal`: the validation signal of contribution scores.

The gradient of the validation loss (ESMM's, the devices' training loss) at the current federated
model and its diagonal empirical Fisher (the mean of per-example squared gradients), for the rows
the validation sample uses and every dense layer; stored in the federated state under the model
version it was computed at, where the aggregator finds it (cloud_service/federated/contribution.py
says how it scores each update with it).

The validation log is an .npz of impressions the cloud has logged and no device trains on
(a held-out slice of the event stream, or the world's validation split for a simulated fleet):

- `history` (n, L) int: the clicked items before each impression, oldest first, PAD = −1
- `item` (n,) int: the item shown; `position` (n,) int: its slot on the page
- `click` (n,) 0/1; `purchase` (n,) 0/1 (optional: zeros)

    python -m training.federated.contribution_signal --write-world-validation val.npz --scale small
    python -m training.federated.contribution_signal --validation val.npz [--sample 4096]

The second reads CLOUD_* (Redis URL, key prefix, CLOUD_BUNDLE_DIR for the item categories) as the
cloud does. Re-run it as the model moves (a cron beside the aggregator): the aggregator uses the
newest signal at or below the model's version and records the distance.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from cloud_service.federated.contribution import ValidationSignal, encode_signal
from tandem_core.models.din import (
    FEDERATED_ROWS,
    DinRanker,
    esmm_loss,
    federated_dense,
    federated_rows,
    ranker_from_federated,
)

DAMPING = 0.1  # λ = DAMPING × mean(diag F) over the signal's coordinates
CHUNK = 64  # examples per vmapped per-example gradient (memory: CHUNK × rows × dim floats)


@dataclass(frozen=True)
class ValidationLog:
    history: np.ndarray
    item: np.ndarray
    position: np.ndarray
    click: np.ndarray
    purchase: np.ndarray

    @classmethod
    def load(cls, path: Path) -> ValidationLog:
        with np.load(path, allow_pickle=False) as z:
            n = len(z["item"])
            purchase = z["purchase"] if "purchase" in z.files else np.zeros(n)
            log = cls(z["history"], z["item"], z["position"], z["click"], purchase)
        if log.history.ndim != 2 or {len(log.history), len(log.position), len(log.click)} != {n}:
            raise ValueError(f"{path}: history (n, L), item, position, click of one length n")
        return log

    def save(self, path: Path) -> None:
        np.savez(path, history=self.history, item=self.item, position=self.position,
                 click=self.click, purchase=self.purchase)  # fmt: skip

    def sample(self, n: int, seed: int) -> ValidationLog:
        if n >= len(self.item):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self.item), n, replace=False))
        return ValidationLog(*(a[idx] for a in self.arrays()))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.history, self.item, self.position, self.click, self.purchase

    def rows(self) -> np.ndarray:
        """The item ids whose rows the validation loss depends on (sorted)."""
        return np.union1d(self.history[self.history >= 0], self.item).astype(np.int64)


class _Loss(nn.Module):
    """ESMM's loss as a module's forward, so torch.func can take per-example gradients."""

    def __init__(self, model: DinRanker) -> None:
        super().__init__()
        self.model = model

    def forward(self, *batch: torch.Tensor) -> torch.Tensor:
        return esmm_loss(self.model, *batch)


def compute_signal(
    ids: np.ndarray, rows: np.ndarray, dense: dict[str, np.ndarray], categories: np.ndarray,
    log: ValidationLog, version: int, damping: float = DAMPING, chunk: int = CHUNK,
) -> ValidationSignal:  # fmt: skip
    """The signal at a model given as the rows of `ids` (= log.rows()), its dense layers and
    the categories of `ids`: a submodel on local ids, as a device trains one."""
    model = _Loss(ranker_from_federated(rows, dense, categories))
    local = {int(g): k for k, g in enumerate(ids)}
    remap = np.vectorize(lambda g: local.get(int(g), -1), otypes=[np.int64])
    hist = np.where(log.history >= 0, remap(log.history), -1) if log.history.size else log.history
    batch = [
        torch.from_numpy(np.asarray(hist, np.int64)),
        torch.from_numpy(remap(log.item))[:, None],
        torch.from_numpy(log.position.astype(np.int64))[:, None],
        torch.from_numpy(log.click.astype(np.float32))[:, None],
        torch.from_numpy(log.purchase.astype(np.float32))[:, None],
    ]
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss(p: dict[str, torch.Tensor], *one: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, buffers), tuple(t.unsqueeze(0) for t in one))

    model.train()
    g = grad(lambda p: functional_call(model, (p, buffers), tuple(batch)))(params)
    per_example = vmap(grad(loss), in_dims=(None, 0, 0, 0, 0, 0))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    n = len(log.item)
    for lo in range(0, n, chunk):
        grads = per_example(params, *(t[lo : lo + chunk] for t in batch))
        for name, gi in grads.items():
            fisher[name] += (gi.double() ** 2).sum(0).float()
    return _signal(ids, g, {k: v / max(n, 1) for k, v in fisher.items()}, version, damping, n)


def _signal(
    ids: np.ndarray, g: dict[str, torch.Tensor], f: dict[str, torch.Tensor], version: int,
    damping: float, n: int,
) -> ValidationSignal:  # fmt: skip
    """Named torch gradients → the federated layout: row = [item embedding | item bias]."""
    emb, bias = (f"model.{k}" for k in FEDERATED_ROWS)
    row_g = torch.cat([g[emb], g[bias]], 1).numpy().astype(np.float64)
    row_f = torch.cat([f[emb], f[bias]], 1).numpy().astype(np.float64)
    dense_g = {k[6:]: v.numpy().astype(np.float64) for k, v in g.items() if k not in (emb, bias)}
    dense_f = {k[6:]: v.numpy().astype(np.float64) for k, v in f.items() if k not in (emb, bias)}
    parts = [row_f.ravel(), *(a.ravel() for a in dense_f.values())]
    mean_f = float(np.concatenate(parts).mean()) if parts else 0.0
    lam = max(damping * mean_f, 1e-12)
    return ValidationSignal(version, ids, row_g, row_f, dense_g, dense_f, lam, n)


def signal_of_model(
    model: DinRanker, log: ValidationLog, version: int = 0, damping: float = DAMPING
) -> ValidationSignal:
    """The signal at an in-memory DIN (the attack benchmark's): the same computation as the
    job's on the stored model."""
    ids = log.rows()
    rows = federated_rows(model)[ids]
    categories = model.item_category.numpy()[ids]
    return compute_signal(ids, rows, federated_dense(model), categories, log, version, damping)


def validation_from_experiment(exp: object, n: int, seed: int) -> ValidationLog:
    """`n` impressions of the world's validation split (logged clicks, not the world's truth)."""
    held = exp.held_out  # type: ignore[attr-defined]
    valid, hist = held.split.valid, held.valid_history
    log = ValidationLog(hist, valid.item, valid.position, valid.click, valid.purchase)
    return log.sample(n, seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validation", type=Path, help="the validation log (.npz, see above)")
    ap.add_argument("--sample", type=int, default=4096, help="impressions used (seeded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--damping", type=float, default=DAMPING, help="λ relative to mean F")
    ap.add_argument("--timeout-s", type=float, default=30.0, help="deadline of the Redis calls")
    ap.add_argument("--write-world-validation", type=Path, metavar="NPZ",
                    help="write the world's validation split as a log, then stop")  # fmt: skip
    ap.add_argument("--scale", default="small", help="the world's scale (--write-world-...)")
    args = ap.parse_args(argv)
    if args.write_world_validation is not None:
        from simulator.pipeline import build_experiment
        from simulator.scales import SCALES

        exp = build_experiment(replace(SCALES[args.scale], seed=0))
        validation_from_experiment(exp, 10**9, 0).save(args.write_world_validation)
        print(f"wrote {args.write_world_validation}")
        return 0
    if args.validation is None:
        ap.error("--validation is required (or --write-world-validation)")
    return store_signal(args)


def store_signal(args: argparse.Namespace) -> int:
    from cloud_service.registry.bundle import load_bundle, load_federated_start
    from cloud_service.settings import load_settings
    from cloud_service.store.breaker import Breaker
    from cloud_service.store.federated_redis import FederatedStore
    from cloud_service.store.redis_store import build_redis

    s = load_settings()
    log = ValidationLog.load(args.validation).sample(args.sample, args.seed)
    categories = load_bundle(s.models.bundle_dir).item_category
    dim = load_federated_start(s.models.bundle_dir)[0].shape[1]
    ids = log.rows()
    if len(ids) and (ids.min() < 0 or ids.max() >= len(categories)):
        print(f"not stored: the log names items outside the catalogue of {len(categories)}")
        return 2
    client = build_redis(s.store.redis_url, socket_timeout_s=args.timeout_s,
                         retries=s.store.redis_retries, cluster=s.store.redis_cluster)  # fmt: skip
    try:
        fl = FederatedStore(client, s.store.key_prefix, Breaker(s.store.redis_open_circuit_s))
        rows, dense, version = fl.snapshot(ids.tolist(), dim)
        if not dense:
            print("not stored: no federated model in Redis")
            return 2
        signal = compute_signal(ids, rows, dense, categories[ids], log, version, args.damping)
        fl.put_signal(version, encode_signal(signal))
    finally:
        client.close()
    print(f"stored the validation signal at version {version}: {len(ids)} rows, "
          f"{len(log.item)} impressions, λ = {signal.damping:.3g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
