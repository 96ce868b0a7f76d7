"""The state federated learning runs on: the model, the round, the update stream and the lease.

The parameter server (`FederatedService`) and the aggregator see only this protocol;
`FederatedStore` (Redis) and `MemoryFederatedState` implement it and pass one contract suite
(tests/integration/test_federated_state_contract.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

# How long a push's update id is remembered for de-duplication, after the latest push.
SEEN_TTL_MS = 7 * 86_400_000
SIGNALS_KEPT = 3  # validation signals kept, newest model versions first
CONTRIBUTIONS_KEPT = 50  # rounds whose contribution scores are kept


@dataclass(frozen=True)
class RoundInfo:
    round_id: str
    state: str  # open | applied | aborted
    base_version: int
    deadline_ms: int  # wall clock, ms since the epoch
    quorum: int
    selected: frozenset[str]


@dataclass(frozen=True)
class StoredPush:
    """One accepted push as the stream holds it, until the aggregator acks it."""

    entry_id: str
    round_id: str
    update_id: str
    payload: bytes  # the encoded ModelUpdate


@dataclass(frozen=True)
class RoundContributions:
    """A round's contribution scores (cloud_service/federated/contribution.py), as recorded."""

    round_id: str
    state: str  # what the round ended in: applied | aborted
    version: int  # the model version the round's updates were scored against
    signal_version: int  # the version the validation signal was computed at
    mode: str  # first_order | fisher
    scores: dict[str, float]  # device id -> score (higher: more useful)
    excluded: tuple[str, ...] = ()  # devices left out of the aggregate for a low score
    at_ms: int = 0  # wall clock, ms since the epoch

    def to_json(self) -> str:
        d = asdict(self)
        d["scores"] = {k: (v if math.isfinite(v) else None) for k, v in self.scores.items()}
        return json.dumps(d | {"excluded": list(self.excluded)})

    @classmethod
    def from_json(cls, raw: str | bytes) -> RoundContributions:
        d = json.loads(raw)
        scores = {k: math.nan if v is None else float(v) for k, v in d["scores"].items()}
        return cls(**(d | {"scores": scores, "excluded": tuple(d["excluded"])}))


def signal_version_for(versions: Iterable[int], version: int) -> int | None:
    """Which stored signal `get_signal(version)` answers (both implementations share it)."""
    kept = sorted(versions)
    below = [v for v in kept if v <= version]
    return below[-1] if below else (kept[0] if kept else None)


def signals_to_drop(versions: Iterable[int]) -> list[int]:
    return sorted(versions, reverse=True)[SIGNALS_KEPT:]


class RoundNotCurrent(RuntimeError):
    """The round being finished was replaced or changed meanwhile; re-read, do not re-apply."""


class NonFiniteModel(ValueError):
    """Applying the round would leave a weight NaN, infinite or beyond float32; nothing stored."""


FLOAT32_MAX = float(np.finfo(np.float32).max)


def applied(base: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """base + delta as the stored float32, computed in float64 so an overflow is seen rather
    than stored as inf; NonFiniteModel when the result is not a finite float32."""
    value = base.astype(np.float64) + np.asarray(delta, dtype=np.float64)
    if not np.isfinite(value).all() or np.abs(value).max(initial=0.0) > FLOAT32_MAX:
        raise NonFiniteModel("the round's aggregate would make the model non-finite")
    return value.astype(np.float32)


class FederatedState(Protocol):
    # --- the global model -------------------------------------------------------------------
    def initialise(self, rows: np.ndarray, dense: dict[str, np.ndarray]) -> bool:
        """Write version 0 once (the first replica wins); False when a model already exists."""
        ...

    def row_count(self) -> int: ...

    def version(self) -> int:
        """Rounds applied since version 0 (0 before `initialise`)."""
        ...

    def snapshot(
        self, item_ids: Iterable[int], dim: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
        """Rows of `item_ids` (zeros for unknown ids), all dense layers and the version, read
        consistently with each other."""
        ...

    # --- devices and rounds -----------------------------------------------------------------
    def register(self, device_id: str) -> None: ...

    def devices(self) -> list[str]:
        """Every registered device, sorted."""
        ...

    def current_round(self) -> RoundInfo | None: ...

    def open_round(self, info: RoundInfo) -> None:
        """Replace the current round by `info`, in state 'open'."""
        ...

    # --- updates ----------------------------------------------------------------------------
    def push(
        self, update_id: str, round_id: str, device_id: str, payload: bytes
    ) -> tuple[str, str]:
        """(outcome, stream entry id), outcome accepted | duplicate | closed | late | not_selected
        | already_pushed, checked in that order (closed, late, not_selected, duplicate,
        already_pushed) and atomically with the append; a duplicate answers the entry id of the
        update id's first push; already_pushed: this device's update for the round, under
        another update id, is already in (one accepted update per device per round)."""
        ...

    def ensure_group(self, group: str) -> None:
        """Create the consumer group (reading from the stream's start) unless it exists."""
        ...

    def read(self, group: str, consumer: str, pending: bool, block_ms: int) -> list[StoredPush]:
        """This consumer's delivered but unacked entries (`pending`), or entries new to the group,
        which become this consumer's pending ones; waits up to `block_ms` for new ones (0: until
        one arrives, as Redis's BLOCK 0)."""
        ...

    def ack(self, group: str, entry_ids: list[str]) -> None:
        """Drop entries from the stream (late arrivals of a finished round, undecodable ones)."""
        ...

    def claim_pending(self, group: str, consumer: str) -> None:
        """Make every pending entry of the group `consumer`'s (a dead leader's, or its own)."""
        ...

    def finish_round(
        self, group: str, round_id: str, entry_ids: list[str], state: str,
        row_ids: np.ndarray | None = None, row_delta: np.ndarray | None = None,
        dense_delta: dict[str, np.ndarray] | None = None,
        remember: Mapping[str, bytes] | None = None, forget: Sequence[str] = (),
    ) -> int:  # fmt: skip
        """Apply (state 'applied': rows += row_delta, layers += dense_delta, version + 1) or drop
        ('aborted') the round, set its state and ack its entries, all at once; returns the
        version. When applied, FedLaAvg's memory changes in the same step: each `remember`
        device's latest update (encoded) is stored with the new version, `forget` devices' are
        dropped; an aborted round leaves the memory as it was. Raises RoundNotCurrent when
        `round_id` is not (or no longer) the round, and NonFiniteModel (changing nothing) when a
        new weight would not be a finite float32."""
        ...

    def latest_updates(self) -> dict[str, tuple[int, bytes]]:
        """FedLaAvg's memory: device -> (the version its latest update was applied at, the
        encoded update). Kept in the state so another aggregator continues it."""
        ...

    # --- contribution estimates ---------------------------------------------------------------
    def put_signal(self, version: int, payload: bytes) -> None:
        """Store a validation signal (encoded) computed at model `version`, replacing one of the
        same version; only the SIGNALS_KEPT newest versions are kept."""
        ...

    def get_signal(self, version: int) -> tuple[int, bytes] | None:
        """(its version, the encoded signal): the newest at or below `version`, else the oldest
        above it (a model reset under a kept signal); None when there is none."""
        ...

    def record_contributions(self, record: RoundContributions) -> None:
        """Keep a round's scores; only the CONTRIBUTIONS_KEPT latest rounds are kept."""
        ...

    def contributions(self, n: int) -> list[RoundContributions]:
        """The `n` latest rounds' scores, newest first."""
        ...

    # --- the aggregator lease ---------------------------------------------------------------
    def hold_lease(self, name: str, lease_ms: int) -> bool:
        """Take the lease when free or expired, or renew it when `name` holds it; False while
        another holder's lease runs."""
        ...
