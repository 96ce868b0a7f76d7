"""A round's aggregate under the configured defences: clipping, robust rows, floors, step bounds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cloud_service.federated.aggregate import fedavg_dense, fedsubavg, submodel_fedavg
from cloud_service.federated.robust import (
    bound_row_steps,
    clip_rows_to_median,
    clip_to_median,
    clip_update,
    robust_rows,
    rows_with_contributors,
    trimmed_dense,
)
from tandem_core.federated.update import ModelUpdate

ROW_AGGREGATORS = ("mean", "trimmed_mean", "median")


@dataclass(frozen=True)
class Defences:
    """The aggregation rule and its defences. The dataclass defaults are the bare algorithm (the
    math's reference); the deployed defaults come from `FederatedSettings` (clipping on)."""

    algorithm: str = "fedsubavg"  # fedsubavg | fedavg | fedlaavg (FedSubAvg over latest updates)
    clip_norm: float = 0.0  # fixed L2 bound per update; 0 = none
    min_contributors: int = 1
    min_contributor_share: float = 0.0  # floor also ≥ ceil(share × the round's devices)
    trim: float = 0.0  # trimmed-mean share per side: dense layers, and rows if trimmed_mean
    clip_median: bool = False  # clip every update to the round's median norm
    max_correction: float = math.inf  # cap of FedSubAvg's N / N_m (relative to FedAvg)
    clip_row_median: bool = False  # clip every row delta to the round's median row norm
    row_aggregator: str = "mean"  # mean (the algorithm's) | trimmed_mean | median
    max_row_step: float = 0.0  # bound each row's step at this × the round's median; 0 = none

    def __post_init__(self) -> None:
        if self.row_aggregator not in ROW_AGGREGATORS:
            raise ValueError(f"row_aggregator must be one of {ROW_AGGREGATORS}")


def aggregate(
    updates: list[ModelUpdate], dim: int, d: Defences
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(row ids, row delta, dense delta) of one round under the configured defences."""
    if d.clip_norm > 0:
        updates = [clip_update(u, d.clip_norm) for u in updates]
    if d.clip_median:
        updates = clip_to_median(updates)
    if d.clip_row_median:
        updates = clip_rows_to_median(updates)
    if d.row_aggregator != "mean":
        ids, delta = robust_rows(updates, dim, d.row_aggregator, d.trim)
    elif d.algorithm == "fedavg":
        ids, delta = submodel_fedavg(updates, dim)
    else:
        ids, delta = fedsubavg(updates, dim, d.max_correction)
    share = math.ceil(d.min_contributor_share * len(updates) - 1e-9)  # 0.07 × 100 is 7, not 8
    keep = rows_with_contributors(updates, ids, max(d.min_contributors, share))
    if d.max_row_step > 0:
        delta[keep] = bound_row_steps(delta[keep], d.max_row_step)
    dense = trimmed_dense(updates, d.trim) if d.trim > 0 else fedavg_dense(updates)
    return ids[keep], delta[keep], dense


def is_finite(delta: np.ndarray, dense: dict[str, np.ndarray]) -> bool:
    """An aggregate that may be applied: every value finite (NaN / inf → the round is
    abandoned and the model stays as it was)."""
    return bool(np.isfinite(delta).all()) and all(np.isfinite(a).all() for a in dense.values())
