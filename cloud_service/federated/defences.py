"""A round's aggregate under the configured defences: clipping, contributor floor, trimmed mean."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cloud_service.federated.aggregate import fedavg_dense, fedsubavg, submodel_fedavg
from cloud_service.federated.robust import (
    clip_to_median,
    clip_update,
    rows_with_contributors,
    trimmed_dense,
)
from tandem_core.federated.update import ModelUpdate


@dataclass(frozen=True)
class Defences:
    algorithm: str = "fedsubavg"  # fedsubavg | fedavg | fedlaavg (FedSubAvg over latest updates)
    clip_norm: float = 0.0  # fixed L2 bound per update; 0 = none
    min_contributors: int = 1
    trim: float = 0.0
    clip_median: bool = False  # clip every update to the round's median norm
    max_correction: float = math.inf  # cap of FedSubAvg's N / N_m (relative to FedAvg)


def aggregate(
    updates: list[ModelUpdate], dim: int, d: Defences
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(row ids, row delta, dense delta) of one round under the configured defences."""
    if d.clip_norm > 0:
        updates = [clip_update(u, d.clip_norm) for u in updates]
    if d.clip_median:
        updates = clip_to_median(updates)
    if d.algorithm == "fedavg":
        ids, delta = submodel_fedavg(updates, dim)
    else:
        ids, delta = fedsubavg(updates, dim, d.max_correction)
    keep = rows_with_contributors(updates, ids, d.min_contributors)
    dense = trimmed_dense(updates, d.trim) if d.trim > 0 else fedavg_dense(updates)
    return ids[keep], delta[keep], dense
