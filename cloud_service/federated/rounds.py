"""Round policy: who trains in a round, until when, how many must answer, which pushes count."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoundConfig:
    devices_per_round: int = 20  # the cohort the round needs
    over_select: float = 0.3  # select 30 % more to cover drop-outs (Bonawitz et al., MLSys 2019)
    quorum_share: float = 0.5  # of the cohort; below it at the deadline the round is abandoned
    duration_s: float = 30.0
    staleness_bound: int = 2  # pushes based on a version older than this many rounds: refused
    staleness_decay: float = 0.5  # weight × decay^staleness for pushes within the bound
    max_rows_per_device: int = 2000
    max_samples: int = 10_000  # num_samples one push may claim
    max_row_norm: float = 10.0  # hard L2 bound of one row delta (0 = none)
    max_update_norm: float = 100.0  # hard L2 bound of a whole update (0 = none)
    latest_max_age: int = 5  # FedLaAvg: a remembered update is reused in at most this many rounds

    @property
    def quorum(self) -> int:
        return max(1, math.ceil(self.quorum_share * self.devices_per_round))


def select_devices(devices: list[str], cfg: RoundConfig, rng: np.random.Generator) -> list[str]:
    """A uniform sample of ceil(cohort × (1 + over_select)) registered devices (all if fewer)."""
    n = min(len(devices), math.ceil(cfg.devices_per_round * (1 + cfg.over_select)))
    if n == 0:
        return []
    return sorted(rng.choice(np.asarray(devices, dtype=object), size=n, replace=False).tolist())


def staleness_weight(current_version: int, base_version: int, cfg: RoundConfig) -> float | None:
    """Weight of a push made on `base_version`; None when it is beyond the staleness bound."""
    staleness = current_version - base_version
    if staleness < 0 or staleness > cfg.staleness_bound:
        return None
    return float(cfg.staleness_decay**staleness)
