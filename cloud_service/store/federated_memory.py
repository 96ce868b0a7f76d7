"""FederatedState in one process's memory: the Redis store's twin, for tests and a one-box run.

Same semantics as `FederatedStore` (the contract suite runs against both): every operation
holds one lock, as every Redis operation is one script or one MULTI; stream entries are
pending per consumer until acked; the lease and the push deadline read an injectable clock.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from cloud_service.store.federated_state import (
    CONTRIBUTIONS_KEPT,
    SEEN_TTL_MS,
    RoundContributions,
    RoundInfo,
    RoundNotCurrent,
    StoredPush,
    applied,
    signal_version_for,
    signals_to_drop,
)

PAGE = 500  # entries per read of new ones, as the Redis store's XREADGROUP COUNT


@dataclass
class _Group:
    delivered: tuple[int, int] = (0, 0)  # the last entry id handed out to the group
    pending: dict[str, str] = field(default_factory=dict)  # entry id -> consumer


def _key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


class MemoryFederatedState:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """`clock`: wall-clock seconds (round deadlines are epoch milliseconds)."""
        self.clock = clock
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._version: int | None = None
        self._rows: dict[int, np.ndarray] = {}
        self._dense: dict[str, np.ndarray] = {}
        self._devices: set[str] = set()
        self._round: RoundInfo | None = None
        self._pushed: dict[str, str] = {}  # device -> round id of its accepted push
        self._latest: dict[str, tuple[int, bytes]] = {}  # FedLaAvg: device -> (version, update)
        self._seen: dict[str, str] = {}  # update id -> entry id of its first push
        self._seen_until_ms = 0.0
        self._stream: dict[str, StoredPush] = {}  # in entry id order
        self._last_id = (0, 0)
        self._groups: dict[str, _Group] = {}
        self._lease: tuple[str, float] | None = None  # holder, expiry in clock seconds
        self._signals: dict[int, bytes] = {}  # model version -> encoded validation signal
        self._contributions: deque[RoundContributions] = deque(maxlen=CONTRIBUTIONS_KEPT)

    def _now_ms(self) -> float:
        return self.clock() * 1000

    # --- the global model -------------------------------------------------------------------
    def initialise(self, rows: np.ndarray, dense: dict[str, np.ndarray]) -> bool:
        with self._lock:
            if self._version is not None:
                return False
            self._version = 0
            self._rows = {i: np.array(r, dtype=np.float32) for i, r in enumerate(rows)}
            self._dense = {n: np.array(a, dtype=np.float32) for n, a in dense.items()}
            return True

    def row_count(self) -> int:
        with self._lock:
            return len(self._rows)

    def version(self) -> int:
        with self._lock:
            return self._version or 0

    def snapshot(
        self, item_ids: Iterable[int], dim: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
        ids = [int(i) for i in item_ids]
        rows = np.zeros((len(ids), dim), dtype=np.float32)
        with self._lock:
            for pos, item in enumerate(ids):
                if item in self._rows:
                    rows[pos] = self._rows[item]
            dense = {n: a.copy() for n, a in self._dense.items()}
            return rows, dense, self._version or 0

    # --- devices and rounds -----------------------------------------------------------------
    def register(self, device_id: str) -> None:
        with self._lock:
            self._devices.add(device_id)

    def devices(self) -> list[str]:
        with self._lock:
            return sorted(self._devices)

    def current_round(self) -> RoundInfo | None:
        with self._lock:
            return self._round

    def open_round(self, info: RoundInfo) -> None:
        with self._lock:
            self._round = replace(info, state="open", selected=frozenset(info.selected))
            self._pushed = {}

    # --- updates ----------------------------------------------------------------------------
    def push(
        self, update_id: str, round_id: str, device_id: str, payload: bytes
    ) -> tuple[str, str]:
        with self._lock:
            rnd, now_ms = self._round, self._now_ms()
            if rnd is None or rnd.round_id != round_id or rnd.state != "open":
                return "closed", ""
            if now_ms > rnd.deadline_ms:
                return "late", ""
            if device_id not in rnd.selected:
                return "not_selected", ""
            if now_ms > self._seen_until_ms:  # the de-duplication memory lapsed, as PEXPIRE
                self._seen.clear()
            if update_id in self._seen:
                return "duplicate", self._seen[update_id]
            if self._pushed.get(device_id) == round_id:
                return "already_pushed", ""
            entry_id = self._next_id(now_ms)
            self._stream[entry_id] = StoredPush(entry_id, round_id, update_id, bytes(payload))
            self._seen[update_id] = entry_id
            self._pushed[device_id] = round_id
            self._seen_until_ms = now_ms + SEEN_TTL_MS
            self._arrived.notify_all()
            return "accepted", entry_id

    def _next_id(self, now_ms: float) -> str:
        """'<ms>-<seq>', increasing even if the clock goes back (as XADD's `*`)."""
        ms = int(now_ms)
        last_ms, last_seq = self._last_id
        self._last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return f"{self._last_id[0]}-{self._last_id[1]}"

    def ensure_group(self, group: str) -> None:
        with self._lock:
            self._groups.setdefault(group, _Group())

    def read(self, group: str, consumer: str, pending: bool, block_ms: int) -> list[StoredPush]:
        with self._lock:
            g = self._group(group)
            if pending:
                mine = sorted((e for e, c in g.pending.items() if c == consumer), key=_key)
                return [self._stream[e] for e in mine]
            timeout = None if block_ms == 0 else block_ms / 1000
            self._arrived.wait_for(lambda: self._new(g), timeout)
            new = self._new(g)[:PAGE]
            for entry in new:
                g.pending[entry.entry_id] = consumer
            if new:
                g.delivered = _key(new[-1].entry_id)
            return new

    def _group(self, group: str) -> _Group:
        if group not in self._groups:
            raise LookupError(f"no consumer group {group!r} (as Redis's NOGROUP)")
        return self._groups[group]

    def _new(self, g: _Group) -> list[StoredPush]:
        return [e for i, e in self._stream.items() if _key(i) > g.delivered]

    def ack(self, group: str, entry_ids: list[str]) -> None:
        with self._lock:
            self._drop(group, entry_ids)

    def _drop(self, group: str, entry_ids: list[str]) -> None:
        """XACK then XDEL: out of the group's pending entries and out of the stream."""
        g = self._groups.get(group)
        for entry_id in entry_ids:
            if g is not None:
                g.pending.pop(entry_id, None)
            self._stream.pop(entry_id, None)

    def claim_pending(self, group: str, consumer: str) -> None:
        with self._lock:
            g = self._group(group)
            g.pending = dict.fromkeys(g.pending, consumer)

    def finish_round(
        self, group: str, round_id: str, entry_ids: list[str], state: str,
        row_ids: np.ndarray | None = None, row_delta: np.ndarray | None = None,
        dense_delta: dict[str, np.ndarray] | None = None,
        remember: Mapping[str, bytes] | None = None, forget: Sequence[str] = (),
    ) -> int:  # fmt: skip
        apply = state == "applied" and row_ids is not None and row_delta is not None
        with self._lock:
            rnd = self._round
            if rnd is None or rnd.round_id != round_id:
                raise RoundNotCurrent(f"round {round_id} is no longer current")
            version = self._version or 0
            if apply:  # every new value computed before any is stored: all of it or none
                assert row_ids is not None and row_delta is not None
                rows, dense = self._applied(row_ids, row_delta, dense_delta or {})
                self._rows.update(rows)
                self._dense.update(dense)
                version += 1
                self._version = version
                for device in forget:
                    self._latest.pop(device, None)
                self._latest.update({d: (version, bytes(p)) for d, p in (remember or {}).items()})
            self._round = replace(rnd, state=state)
            self._drop(group, entry_ids)
            return version

    def _applied(
        self, row_ids: np.ndarray, row_delta: np.ndarray, dense_delta: dict[str, np.ndarray]
    ) -> tuple[dict[int, np.ndarray], dict[str, np.ndarray]]:
        rows = {}
        for item, delta in zip((int(i) for i in row_ids), row_delta, strict=True):
            base = self._rows.get(item, np.zeros_like(delta, dtype=np.float32))
            rows[item] = applied(base, delta)
        dense = {name: applied(self._dense[name], delta) for name, delta in dense_delta.items()}
        return rows, dense

    def latest_updates(self) -> dict[str, tuple[int, bytes]]:
        with self._lock:
            return dict(self._latest)

    # --- contribution estimates ---------------------------------------------------------------
    def put_signal(self, version: int, payload: bytes) -> None:
        with self._lock:
            self._signals[int(version)] = bytes(payload)
            for old in signals_to_drop(self._signals):
                del self._signals[old]

    def get_signal(self, version: int) -> tuple[int, bytes] | None:
        with self._lock:
            at = signal_version_for(self._signals, version)
            return None if at is None else (at, self._signals[at])

    def record_contributions(self, record: RoundContributions) -> None:
        with self._lock:
            self._contributions.appendleft(record)

    def contributions(self, n: int) -> list[RoundContributions]:
        with self._lock:
            return list(itertools.islice(self._contributions, max(n, 0)))

    # --- the aggregator lease ---------------------------------------------------------------
    def hold_lease(self, name: str, lease_ms: int) -> bool:
        with self._lock:
            now = self.clock()
            if self._lease is not None and self._lease[0] != name and now < self._lease[1]:
                return False
            self._lease = (name, now + lease_ms / 1000)
            return True
