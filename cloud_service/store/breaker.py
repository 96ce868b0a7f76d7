"""A circuit breaker around Redis: after a failure, skip Redis for a while, not wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from cloud_service.store.base import StoreUnavailable

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class Breaker:
    """Open for `open_s` seconds after a failure; the first call after that probes Redis again.

    redis-py's Retry handles blips inside one call; this keeps a dead Redis from costing every
    request its socket timeout × retries, and lets the service recover by itself.
    """

    def __init__(self, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_s = open_s
        self.clock = clock
        self._open_until = 0.0
        self._lock = threading.Lock()
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    @contextmanager
    def guard(self) -> Iterator[None]:
        if self.is_open:
            raise StoreUnavailable("redis unavailable (circuit open)")
        try:
            yield
        except REDIS_ERRORS as exc:
            with self._lock:
                self.failures += 1
                self._open_until = self.clock() + self.open_s
            raise StoreUnavailable(f"redis unavailable: {exc}") from exc
