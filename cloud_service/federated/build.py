"""Builds the federated parts from settings; the first replica seeds the model from the bundle."""

from __future__ import annotations

from cloud_service.federated.rounds import RoundConfig
from cloud_service.registry.bundle import load_federated_start
from cloud_service.settings import CloudSettings
from cloud_service.store.federated_redis import FederatedStore


def build_round_config(s: CloudSettings) -> RoundConfig:
    return RoundConfig(
        devices_per_round=s.fl_devices_per_round, over_select=s.fl_over_select,
        quorum_share=s.fl_quorum_share, duration_s=s.fl_round_s,
        staleness_bound=s.fl_staleness_bound, staleness_decay=s.fl_staleness_decay,
        max_rows_per_device=s.fl_max_rows,
    )  # fmt: skip


def federated_dims(
    s: CloudSettings, store: FederatedStore
) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(row dim, dense shapes) of the federated model; writes version 0 if Redis has none."""
    rows, dense = load_federated_start(s.bundle_dir)
    store.initialise(rows, dense)
    return int(rows.shape[1]), {name: tuple(a.shape) for name, a in dense.items()}
