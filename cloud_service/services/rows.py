"""Embedding rows for a list of items: Redis cache first, the serving bundle on a miss."""

from __future__ import annotations

import contextlib

import numpy as np

from cloud_service import metrics
from cloud_service.registry.bundle import ServingBundle
from cloud_service.store.base import RowCache, StoreUnavailable


class RowService:
    """Read-through cache of versioned rows; the hit rate is exported to Prometheus.

    The bundle is the source of truth today; the cache is where the federated parameter server
    will write updated rows, so serving reads them from the same place devices pull from.
    """

    def __init__(self, bundle: ServingBundle, cache: RowCache) -> None:
        self.bundle, self.cache = bundle, cache

    def rows(self, item_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(item_ids, dtype=np.int64)
        version, dim = self.bundle.embedding_version, self.bundle.dim
        try:
            rows, found = self.cache.get_rows(version, ids, dim)
        except StoreUnavailable:
            metrics.EMBEDDING_ROWS.labels("unavailable").inc(len(ids))
            return self.bundle.item_rows[ids]
        missing = ~found
        metrics.EMBEDDING_ROWS.labels("hit").inc(int(found.sum()))
        metrics.EMBEDDING_ROWS.labels("miss").inc(int(missing.sum()))
        if missing.any():
            rows[missing] = self.bundle.item_rows[ids[missing]]
            with contextlib.suppress(StoreUnavailable):  # the next request fills the cache
                self.cache.put_rows(version, ids[missing], rows[missing])
        return rows
