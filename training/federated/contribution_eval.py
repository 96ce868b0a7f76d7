"""Contribution scores in the attack benchmark: each push scored as the live aggregator scores it.

The signal is the job's (`contribution_signal.signal_of_model`, gradient + diagonal empirical
Fisher of the validation loss at the round's model) and the scores the aggregator's
(`cloud_service.federated.contribution.scores`, both modes). Reported per run: the AUC of a low
score flagging hostile pushes, the share of hostile pushes in their round's bottom decile (the
pushes `CLOUD_FL_EXCLUDE_LOW_CONTRIB=0.1` would leave out) and their median percentile in the
round (0 = the round's lowest score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud_service.federated.contribution import MODES, ValidationSignal, lowest, scores
from simulator.metrics import auc
from tandem_core.federated.update import ModelUpdate
from tandem_core.models.din import DinRanker
from training.federated.contribution_signal import (
    ValidationLog,
    signal_of_model,
    validation_from_experiment,
)

DECILE = 0.1


@dataclass(frozen=True)
class Scored:
    round: int
    first_order: float
    fisher: float
    hostile: bool


@dataclass
class Validation:
    """A fixed sample of validation impressions: the loss whose signal scores each push."""

    log: ValidationLog

    @classmethod
    def of(cls, exp: Any, n: int, seed: int) -> Validation:
        return cls(validation_from_experiment(exp, n, seed))

    def signal(self, model: DinRanker, version: int) -> ValidationSignal:
        return signal_of_model(model, self.log, version)


def score(u: ModelUpdate, signal: ValidationSignal, r: int, hostile: bool) -> Scored:
    first, fisher = (float(scores([u], signal, m)[0]) for m in MODES)
    return Scored(r, first, fisher, hostile)


def report(scored: list[Scored]) -> dict[str, float]:
    """Per mode: contrib_auc_<mode>, bottom_decile_<mode>, median_pct_<mode> (NaN: no attacker)."""
    hostile = np.array([s.hostile for s in scored], dtype=bool)
    rounds = np.array([s.round for s in scored])
    out: dict[str, float] = {}
    for mode in MODES:
        x = np.array([getattr(s, mode) for s in scored], dtype=float)
        low, pct = np.zeros(len(x), dtype=bool), np.full(len(x), math.nan)
        for r in np.unique(rounds):
            at = np.flatnonzero(rounds == r)
            key = np.where(np.isnan(x[at]), -np.inf, x[at])
            low[at[lowest(x[at], DECILE)]] = True
            order = np.argsort(np.argsort(key, kind="stable"), kind="stable")
            pct[at] = order / max(len(at) - 1, 1)
        bad = hostile.any() and not hostile.all()
        out[f"contrib_auc_{mode}"] = _auc(hostile, -x) if bad else math.nan
        out[f"bottom_decile_{mode}"] = float(low[hostile].mean()) if bad else math.nan
        out[f"median_pct_{mode}"] = float(np.median(pct[hostile])) if bad else math.nan
    return out


def _auc(labels: np.ndarray, s: np.ndarray) -> float:
    s = np.nan_to_num(s, nan=1e300, posinf=1e300, neginf=-1e300)  # NaN: flagged (as lowest)
    return float(auc(labels.astype(float), s))


HEAD = [
    "contribution AUC, low flags hostile (first-order / fisher)",
    "hostile pushes in the round's bottom decile (first-order / fisher)",
    "hostile median percentile (first-order / fisher)",
]


def cells(rs: list[dict[str, Any]]) -> list[str]:
    """The HEAD columns for one (attack, profile): means over its seeds."""

    def pair(key: str, pct: bool) -> str:
        vals = []
        for mode in MODES:
            xs = [r.get(f"{key}_{mode}", math.nan) for r in rs]
            m = float(np.mean(xs)) if xs and all(math.isfinite(v) for v in xs) else math.nan
            vals.append("–" if not math.isfinite(m) else f"{100 * m:.0f} %" if pct else f"{m:.3f}")
        return " / ".join(vals)

    return [pair("contrib_auc", False), pair("bottom_decile", True), pair("median_pct", True)]
