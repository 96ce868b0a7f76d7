"""Aggregation of device updates: FedAvg for dense layers, FedSubAvg for embedding rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from tandem_core.federated.update import ModelUpdate


def fedavg_dense(updates: Sequence[ModelUpdate]) -> dict[str, np.ndarray]:
    """Sample-weighted mean of dense deltas (McMahan et al., "Communication-Efficient Learning
    of Deep Networks from Decentralized Data", AISTATS 2017)."""
    total: dict[str, np.ndarray] = {}
    weight: dict[str, float] = {}
    for u in updates:
        for name, delta in u.dense_deltas.items():
            total[name] = total.get(name, 0.0) + u.num_samples * delta.astype(np.float64)
            weight[name] = weight.get(name, 0.0) + u.num_samples
    return {n: (total[n] / weight[n]).astype(np.float32) for n in total if weight[n] > 0}


def _row_sums(
    updates: Sequence[ModelUpdate], dim: int, weight_of: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, Σ w·delta, Σ w over holders, number of holders) per touched row."""
    ids = np.unique(np.concatenate([u.item_ids for u in updates] or [np.empty(0, np.int64)]))
    pos = {int(i): k for k, i in enumerate(ids.tolist())}
    sums = np.zeros((len(ids), dim))
    weights = np.zeros(len(ids))
    holders = np.zeros(len(ids))
    for u in updates:
        idx = np.array([pos[int(i)] for i in u.item_ids], dtype=np.int64)
        w = (
            u.row_counts.astype(np.float64)
            if weight_of == "rows"
            else np.full(len(idx), u.num_samples, float)
        )
        np.add.at(sums, idx, w[:, None] * u.row_deltas)
        np.add.at(weights, idx, w)
        np.add.at(holders, idx, 1.0)
    return ids, sums, weights, holders


def submodel_fedavg(updates: Sequence[ModelUpdate], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain FedAvg over submodels: every participant counts, a device without row m adds a
    zero delta, so rows few devices hold are averaged towards zero (the cold-row shrinkage
    FedSubAvg corrects)."""
    ids, sums, _, _ = _row_sums(updates, dim, weight_of="samples")
    total = float(sum(u.num_samples for u in updates))
    if total == 0 or len(ids) == 0:
        return ids, np.zeros((len(ids), dim), np.float32)
    return ids, (sums / total).astype(np.float32)


def fedsubavg(
    updates: Sequence[ModelUpdate], dim: int, max_correction: float = math.inf
) -> tuple[np.ndarray, np.ndarray]:
    """FedSubAvg (Ding et al., "Federated Submodel Optimization for Hot and Cold Data
    Features", NeurIPS 2022): row m is averaged only over the devices that hold it, each weighted
    by its local sample count for that row — the plain average scaled by the heat correction
    N / N_m. With every device holding every row and counts equal to num_samples this is FedAvg.

    `max_correction` caps that correction relative to submodel FedAvg (a row's denominator is at
    least the round's samples / max_correction): a row held by one device in the round then
    moves by at most max_correction × its FedAvg step. Our addition, not the paper's: measured
    in docs/benchmarks.md (the uncapped correction made cold rows noisy in our world).
    """
    ids, sums, weights, _ = _row_sums(updates, dim, weight_of="rows")
    if len(ids) == 0:
        return ids, np.zeros((0, dim), np.float32)
    if math.isfinite(max_correction):
        total = float(sum(u.num_samples for u in updates))
        weights = np.maximum(weights, total / max_correction)
    out = np.zeros_like(sums)
    held = weights > 0
    out[held] = sums[held] / weights[held, None]
    return ids, out.astype(np.float32)


def fedlaavg_merge(
    latest: Mapping[str, ModelUpdate], fresh: Sequence[ModelUpdate]
) -> dict[str, ModelUpdate]:
    """FedLaAvg's memory (Yan et al., "Distributed Non-Convex Optimization with Sublinear
    Speedup under Intermittent Client Availability", 2020): every device's latest update, the
    round's fresh ones replacing theirs. The server averages the merged set every round, so a
    device that is offline this round still counts with its last update and devices that are
    rarely available are not drowned by the frequent ones."""
    merged = dict(latest)
    merged.update({u.device_id: u for u in fresh})
    return merged


def most_outdated_first(
    available: Sequence[str], last_round: Mapping[str, int], n: int
) -> list[str]:
    """FedLaAvg's selection: the n available devices whose latest update is oldest (never first);
    ties in id order so the choice is reproducible."""
    return sorted(available, key=lambda d: (last_round.get(d, -1), d))[:n]
