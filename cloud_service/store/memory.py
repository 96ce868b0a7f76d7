"""In-process implementations of the stores: for unit tests and the Redis-down budget fallback."""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from cloud_service.domain import BudgetDecision, Event, Session
from cloud_service.store.codec import stream_fields


class MemorySessions:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._data: dict[str, tuple[float, Session]] = {}

    def load(self, device_id: str) -> Session | None:
        entry = self._data.get(device_id)
        if entry is None or entry[0] <= self.clock():
            self._data.pop(device_id, None)
            return None
        return copy.deepcopy(entry[1])

    def save(self, device_id: str, session: Session) -> None:
        self._data[device_id] = (self.clock() + self.ttl_s, copy.deepcopy(session))


class MemoryEventLog:
    """The Redis stream's semantics in one process: bounded, all or none, a batch id once."""

    def __init__(self, maxlen: int, max_batches: int = 100_000) -> None:
        self._entries: deque[tuple[str, dict[str, str]]] = deque(maxlen=maxlen)
        self._batches: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.max_batches = max_batches  # claims kept (Redis keeps them for a TTL instead)
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def append(self, device_id: str, events: Sequence[Event], batch_id: str = "") -> list[str]:
        with self._lock:
            if batch_id:
                if (device_id, batch_id) in self._batches:
                    return []
                self._batches[(device_id, batch_id)] = None
                if len(self._batches) > self.max_batches:
                    self._batches.popitem(last=False)
            ids = []
            for e in events:
                eid = f"{int(time.time() * 1000)}-{next(self._seq)}"
                self._entries.append((eid, stream_fields(device_id, e, batch_id)))
                ids.append(eid)
            return ids

    def read(self, count: int) -> list[tuple[str, dict[str, str]]]:
        with self._lock:
            return list(itertools.islice(self._entries, count))


class MemoryBudget:
    """The same token bucket as the Redis Lua script, for one process."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._ts = burst, clock()
        self._lock = threading.Lock()

    def take(self, cost: float = 1.0) -> BudgetDecision:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._ts) * self.rate)
            self._ts = now
            if self._tokens >= cost:
                self._tokens -= cost
                return BudgetDecision(True, 0.0)
            return BudgetDecision(False, (cost - self._tokens) / self.rate)
