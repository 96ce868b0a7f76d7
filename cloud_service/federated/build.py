"""Builds the federated parts from settings; the first replica seeds the model from the bundle."""

from __future__ import annotations

import math
from pathlib import Path

from cloud_service.federated.aggregator import Defences
from cloud_service.federated.rounds import RoundConfig
from cloud_service.registry.bundle import load_federated_start
from cloud_service.settings import FederatedSettings
from cloud_service.store.federated_redis import FederatedStore


def build_round_config(fl: FederatedSettings) -> RoundConfig:
    return RoundConfig(
        devices_per_round=fl.devices_per_round, over_select=fl.over_select,
        quorum_share=fl.quorum_share, duration_s=fl.round_s,
        staleness_bound=fl.staleness_bound, staleness_decay=fl.staleness_decay,
        max_rows_per_device=fl.max_rows,
    )  # fmt: skip


def build_defences(fl: FederatedSettings) -> Defences:
    return Defences(
        algorithm=fl.algorithm, clip_norm=fl.clip_norm, min_contributors=fl.min_contributors,
        trim=fl.trim, clip_median=fl.clip_median,
        max_correction=fl.max_correction or math.inf,  # the setting's 0 means uncapped
    )  # fmt: skip


def federated_dims(
    bundle_dir: Path, store: FederatedStore
) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(row dim, dense shapes) of the federated model; writes version 0 if Redis has none."""
    rows, dense = load_federated_start(bundle_dir)
    store.initialise(rows, dense)
    return int(rows.shape[1]), {name: tuple(a.shape) for name, a in dense.items()}
