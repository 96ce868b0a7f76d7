"""Defences against bad updates: norm clipping, a contributor floor per row, trimmed mean."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from tandem_core.federated.update import ModelUpdate


def update_norm(u: ModelUpdate) -> float:
    dense = sum(float(np.sum(d.astype(np.float64) ** 2)) for d in u.dense_deltas.values())
    return float(np.sqrt(np.sum(u.row_deltas.astype(np.float64) ** 2) + dense))


def clip_update(u: ModelUpdate, max_norm: float) -> ModelUpdate:
    """Scale the whole update (rows and dense) down to L2 norm `max_norm` (Sun et al., "Can You
    Really Backdoor Federated Learning?", 2019); smaller updates pass unchanged."""
    norm = update_norm(u)
    if norm <= max_norm or norm == 0:
        return u
    s = max_norm / norm
    return replace(
        u, row_deltas=(u.row_deltas * s).astype(np.float32),
        dense_deltas={n: (d * s).astype(np.float32) for n, d in u.dense_deltas.items()},
    )  # fmt: skip


def clip_to_median(updates: Sequence[ModelUpdate]) -> list[ModelUpdate]:
    """Clip every update to the round's median update norm: an adaptive bound (clipping to a
    norm quantile, Andrew et al., "Differentially Private Learning with Adaptive Clipping",
    NeurIPS 2021) that a minority of scaled updates cannot move, and that needs no tuning to
    the model's scale — a fixed bound too low stops honest learning."""
    if not updates:
        return []
    bound = float(np.median([update_norm(u) for u in updates]))
    return [clip_update(u, bound) for u in updates] if bound > 0 else list(updates)


def rows_with_contributors(
    updates: Sequence[ModelUpdate], ids: np.ndarray, minimum: int
) -> np.ndarray:
    """Mask of `ids` trained by at least `minimum` devices (count > 0: a decoy, pushed with a
    zero delta and count 0, is no contributor): rarer rows stay unchanged this round (one
    device alone cannot move a row, and its row set is less exposed)."""
    held = np.concatenate(
        [u.item_ids[u.row_counts > 0] for u in updates] or [np.empty(0, np.int64)]
    )
    uniq, counts = np.unique(held, return_counts=True)
    count = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    return np.array([count.get(int(i), 0) >= minimum for i in ids], dtype=bool)


def trimmed_mean(values: np.ndarray, trim: float) -> np.ndarray:
    """Coordinate-wise mean after dropping the `trim` share of largest and of smallest values
    along axis 0 (Yin et al., "Byzantine-Robust Distributed Learning", ICML 2018)."""
    n = values.shape[0]
    k = int(np.floor(trim * n))
    if n - 2 * k <= 0:
        raise ValueError("trim removes every value")
    ordered = np.sort(values, axis=0)
    return ordered[k : n - k].mean(axis=0)


def trimmed_dense(updates: Sequence[ModelUpdate], trim: float) -> dict[str, np.ndarray]:
    names = sorted({n for u in updates for n in u.dense_deltas})
    return {
        n: trimmed_mean(
            np.stack([u.dense_deltas[n] for u in updates if n in u.dense_deltas]), trim
        ).astype(np.float32)
        for n in names
    }


def clip_rows(u: ModelUpdate, max_norm: float) -> ModelUpdate:
    """Scale every row delta of `u` above L2 norm `max_norm` down to it (the dense layers stay):
    the whole-update bound alone lets a device spend its budget on one row (a backdoor)."""
    norms = np.linalg.norm(u.row_deltas.astype(np.float64), axis=1)
    if not len(norms) or norms.max() <= max_norm:
        return u
    scale = np.minimum(1.0, max_norm / np.maximum(norms, 1e-300))
    return replace(u, row_deltas=(u.row_deltas * scale[:, None]).astype(np.float32))


def clip_rows_to_median(updates: Sequence[ModelUpdate]) -> list[ModelUpdate]:
    """Clip every row delta to the round's median row-delta norm over the rows devices trained
    (count > 0; decoys' zero rows would drag the median to zero)."""
    norms = [
        np.linalg.norm(u.row_deltas[u.row_counts > 0].astype(np.float64), axis=1) for u in updates
    ]
    held = np.concatenate(norms) if norms else np.empty(0)
    bound = float(np.median(held)) if len(held) else 0.0
    return [clip_rows(u, bound) for u in updates] if bound > 0 else list(updates)


def robust_rows(
    updates: Sequence[ModelUpdate], dim: int, rule: str, trim: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, delta): each row combined coordinate-wise over the devices that trained it
    (count > 0) by a `trim`-trimmed mean or the median, unweighted — a device's claimed counts
    buy it nothing (Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal
    Statistical Rates", ICML 2018). A row with n holders trims ⌊trim·n⌋ per side, so below
    1 / trim holders it is their plain mean: nothing is robust for a row one or two devices
    hold (the contributor floor and clipping are the bounds there)."""
    if rule not in ("trimmed_mean", "median"):
        raise ValueError(f"unknown robust row rule {rule!r}")
    pairs = [(u.item_ids[u.row_counts > 0], u.row_deltas[u.row_counts > 0]) for u in updates]
    ids = np.concatenate([p[0] for p in pairs] or [np.empty(0, np.int64)]).astype(np.int64)
    if not len(ids):
        return ids, np.zeros((0, dim), np.float32)
    deltas = np.concatenate([p[1] for p in pairs]).astype(np.float64).reshape(len(ids), dim)
    order = np.argsort(ids, kind="stable")
    ids, deltas = ids[order], deltas[order]
    uniq, starts = np.unique(ids, return_index=True)
    out = np.zeros((len(uniq), dim))
    for k, group in enumerate(np.split(deltas, starts[1:])):
        out[k] = np.median(group, axis=0) if rule == "median" else trimmed_mean(group, trim)
    return uniq, out.astype(np.float32)


def bound_row_steps(delta: np.ndarray, factor: float) -> np.ndarray:
    """Scale every aggregated row step above `factor` × the round's median row-step norm (over
    the rows that moved) down to that bound. Our addition, not from a paper: a row only
    colluders hold gets their mean (FedSubAvg's correction undoes their small share), a step
    far above an honest row's; bounded, it moves at most a typical row's step per round."""
    norms = np.linalg.norm(delta.astype(np.float64), axis=1)
    moved = norms[norms > 0]
    if not len(moved) or factor <= 0:
        return delta
    bound = factor * float(np.median(moved))
    scale = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    return (delta * scale[:, None]).astype(np.float32)
