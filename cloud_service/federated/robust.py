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
    """Mask of `ids` held by at least `minimum` devices: rarer rows stay unchanged this round
    (one device alone cannot move a row, and its row set is less exposed)."""
    held = np.concatenate([u.item_ids for u in updates] or [np.empty(0, np.int64)])
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
