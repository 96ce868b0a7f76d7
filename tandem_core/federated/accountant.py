"""One device's index-privacy ledger: the memo of its fixed bits and the ε each item has cost.

Under permanent randomized response (tandem_core/federated/privacy.py) every pull is a function
of the bits fixed so far, so what a device has revealed about an item is the bit of each key it
was released under: a release costs ε(p, q) once, and the item's lifetime ε is the sum over the
keys that released it (independent keys compose). The ledger keeps, per item ever released, that
sum; per current key, the fixed bits; and the counts of true ids left out of training (outside
the pool, or fixed as "not pulled"). A re-key (a lost key, or a ledger that no longer matches
its key) forgets the memo but keeps the spend: the items pay again when they are next released.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tandem_core.federated.privacy import PermanentPull

FORMAT = 1
EMPTY_IDS = np.empty(0, dtype=np.int64)


def _number(x: float) -> float | str:
    """A JSON-safe ε: the float, or "inf" (p = 1 keeps every true id: no bound)."""
    return x if math.isfinite(x) else "inf"


def _float(x: float | str) -> float:
    return math.inf if x == "inf" else float(x)


@dataclass
class IndexLedger:
    key_epoch: int = 1  # keys used so far; re-keyings = key_epoch − 1
    released: np.ndarray = field(default_factory=lambda: EMPTY_IDS.copy())  # this key's, sorted
    pulled: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))  # their bits
    items: np.ndarray = field(default_factory=lambda: EMPTY_IDS.copy())  # ever released, sorted
    spent: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))  # per item
    pulls: int = 0
    withheld_outside_pool: int = 0  # summed over pulls
    withheld_fixed: int = 0  # summed over pulls
    last_outside_pool: int = 0
    last_withheld_fixed: int = 0
    history_lost: bool = False  # a ledger was lost under a live key: earlier spend unknown

    def record(self, pull: PermanentPull, eps: float) -> None:
        """A pull was built: its new releases are fixed and each costs `eps`."""
        if len(pull.new_ids):
            ids = np.concatenate([self.released, pull.new_ids])
            order = np.argsort(ids, kind="stable")
            self.released = ids[order]
            self.pulled = np.concatenate([self.pulled, pull.new_pulled])[order]
            self._spend(pull.new_ids, eps)
        self.pulls += 1
        self.withheld_outside_pool += pull.outside_pool
        self.withheld_fixed += pull.withheld
        self.last_outside_pool, self.last_withheld_fixed = pull.outside_pool, pull.withheld

    def _spend(self, ids: np.ndarray, eps: float) -> None:
        fresh = ids[~np.isin(ids, self.items)]
        items = np.concatenate([self.items, fresh])
        spent = np.concatenate([self.spent, np.zeros(len(fresh))])
        order = np.argsort(items, kind="stable")
        self.items, self.spent = items[order], spent[order]
        self.spent[np.searchsorted(self.items, ids)] += eps

    def rekey(self) -> None:
        """A new key: the memo starts empty; what was spent stays spent."""
        self.key_epoch += 1
        self.released, self.pulled = EMPTY_IDS.copy(), np.empty(0, dtype=bool)

    def item_epsilon(self, item: int) -> float:
        k = int(np.searchsorted(self.items, item))
        return float(self.spent[k]) if k < len(self.items) and self.items[k] == item else 0.0

    @property
    def max_epsilon(self) -> float:
        return float(self.spent.max()) if len(self.spent) else 0.0

    def summary(self) -> dict[str, Any]:
        """What /v1/status shows for the device (ε as a number, or "inf")."""
        by_eps = Counter(round(float(e), 4) for e in self.spent.tolist())
        return {
            "items_released": len(self.items),
            "items_pulled_now": int(self.pulled.sum()),
            "max_item_epsilon": _number(self.max_epsilon),
            "items_by_epsilon": {str(_number(e)): n for e, n in sorted(by_eps.items())},
            "rekeys": self.key_epoch - 1,
            "history_lost": self.history_lost,
            "pulls": self.pulls,
            "withheld_outside_pool": self.withheld_outside_pool,
            "withheld_fixed": self.withheld_fixed,
            "last_pull": {
                "outside_pool": self.last_outside_pool, "withheld_fixed": self.last_withheld_fixed
            },
        }  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "key_epoch": self.key_epoch, "history_lost": self.history_lost,
            "released": self.released.tolist(), "pulled": self.pulled.astype(int).tolist(),
            "items": self.items.tolist(), "spent": [_number(e) for e in self.spent.tolist()],
            "pulls": self.pulls, "withheld_outside_pool": self.withheld_outside_pool,
            "withheld_fixed": self.withheld_fixed,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IndexLedger:
        """The ledger `to_json` wrote; ValueError when it is not one (the caller re-keys)."""
        if d.get("format") != FORMAT:
            raise ValueError(f"index ledger format {d.get('format')!r}, expected {FORMAT}")
        released = np.asarray(d["released"], dtype=np.int64)
        pulled = np.asarray(d["pulled"], dtype=bool)
        items = np.asarray(d["items"], dtype=np.int64)
        spent = np.asarray([_float(e) for e in d["spent"]], dtype=np.float64)
        if len(released) != len(pulled) or len(items) != len(spent):
            raise ValueError("index ledger: arrays of different lengths")
        for ids in (released, items):
            if len(ids) and (np.any(np.diff(ids) <= 0) or ids[0] < 0):
                raise ValueError("index ledger: ids must be sorted, unique and non-negative")
        if not np.isin(released, items).all() or np.any(spent < 0):
            raise ValueError("index ledger: a released item without its spend")
        return cls(
            key_epoch=int(d["key_epoch"]), released=released, pulled=pulled, items=items,
            spent=spent, pulls=int(d["pulls"]),
            withheld_outside_pool=int(d["withheld_outside_pool"]),
            withheld_fixed=int(d["withheld_fixed"]), history_lost=bool(d["history_lost"]),
        )  # fmt: skip


def fleet_summary(ledgers: dict[str, IndexLedger], persisted: bool, eps: float) -> dict[str, Any]:
    """Every device's spend at a glance: the worst item anywhere, re-keyings, withheld ids."""
    worst = max((led.max_epsilon for led in ledgers.values()), default=0.0)
    return {
        "mechanism": "permanent randomized response (RAPPOR-style memo, bits fixed at release)",
        "persisted": persisted,
        "epsilon_per_release": _number(eps),
        "devices": len(ledgers),
        "max_item_epsilon": _number(worst),
        "items_released": sum(len(led.items) for led in ledgers.values()),
        "rekeys": sum(led.key_epoch - 1 for led in ledgers.values()),
        "withheld_outside_pool": sum(led.withheld_outside_pool for led in ledgers.values()),
        "withheld_fixed": sum(led.withheld_fixed for led in ledgers.values()),
    }
