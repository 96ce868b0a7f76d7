"""A circuit breaker around Redis: after a failure, skip Redis for a while, not wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import (
    ClusterDownError,
    CrossSlotTransactionError,
    InvalidPipelineStack,
    RedisClusterException,
    TryAgainError,
)

from cloud_service.store.base import StoreUnavailable

# A Redis Cluster adds its own ways of being unreachable: CLUSTERDOWN (a master lost, the
# cluster refusing every key), TRYAGAIN (a slot moving), and the client's bare
# RedisClusterException when no node answers its slot-map refresh.
REDIS_ERRORS = (
    redis.ConnectionError, redis.TimeoutError, OSError, ClusterDownError, TryAgainError,
    RedisClusterException,
)  # fmt: skip
# ... but a command across slots is a bug to see, not an outage to ride out
CLUSTER_BUGS = (CrossSlotTransactionError, InvalidPipelineStack)


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
            if isinstance(exc, CLUSTER_BUGS):
                raise
            with self._lock:
                self.failures += 1
                self._open_until = self.clock() + self.open_s
            raise StoreUnavailable(f"redis unavailable: {exc}") from exc
