"""One device's session: cached candidate pool, behaviour window, re-rank order, request view."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from device_agent.inference.reranker import OnnxReranker
from device_agent.policy.features import SessionView
from device_agent.policy.pacing import Allowance
from protos.actions import Action

SHOWN_KEPT = 400  # items already shown, excluded from the next cloud request


@dataclass
class Pool:
    """Cached candidates from the cloud, best first by the cloud."""

    items: np.ndarray
    categories: np.ndarray
    cloud_logit: np.ndarray
    rows: np.ndarray

    @staticmethod
    def empty(dim: int = 0) -> Pool:
        z = np.empty(0, dtype=np.float32)
        return Pool(np.empty(0, np.int64), np.empty(0, np.int64), z, np.empty((0, dim), np.float32))

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def without(self, taken: np.ndarray) -> Pool:
        keep = np.ones(len(self), dtype=bool)
        keep[taken] = False
        return Pool(
            self.items[keep], self.categories[keep], self.cloud_logit[keep], self.rows[keep]
        )


@dataclass
class DeviceSession:
    device_id: str
    view: SessionView
    allowance: Allowance
    behavior_len: int
    pool: Pool = field(default_factory=Pool.empty)
    order: np.ndarray | None = None  # re-rank order of the pool; None = stale
    behavior: deque[tuple[int, int, int]] = field(init=False)  # (item, action code, ts ms)
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # embedding rows of known items
    shown: deque[int] = field(init=False)
    page: list[tuple[int, int]] = field(default_factory=list)  # (item, category) last served
    page_clicks: set[int] = field(default_factory=set)
    had_cloud_list: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    steps: int = 0
    cloud_requests: int = 0

    def __post_init__(self) -> None:
        self.behavior = deque(maxlen=self.behavior_len)
        self.shown = deque(maxlen=SHOWN_KEPT)

    def set_pool(self, pool: Pool) -> None:
        """A fresh list from the cloud replaces the cache (EdgeRec: the pool is the unit)."""
        self.pool, self.order, self.had_cloud_list = pool, None, True
        self.rows = {i: self.rows[i] for i, *_ in self.behavior if i in self.rows}
        for item, row in zip(pool.items.tolist(), pool.rows, strict=True):
            self.rows[item] = row
        self.view.on_pool(pool.categories)

    def record_event(self, item: int, action: int, ts_ms: int) -> None:
        self.behavior.append((item, action, ts_ms))
        if action != Action.EXPOSURE and any(item == i for i, _ in self.page):
            self.page_clicks.add(item)
        self.order = None  # every event re-ranks the pool

    def close_page(self) -> None:
        """The previous page's outcome, as the request view needs it (clicks arrived as events)."""
        if self.page:
            cats = np.array([c for _, c in self.page], dtype=np.int64)
            clicked = np.array([i in self.page_clicks for i, _ in self.page], dtype=bool)
            self.view.on_page(cats, clicked)
        # the view assumes pages come off the front of the pool; re-ranked pages do not
        self.view.pool_cats = self.pool.categories.copy()
        self.page, self.page_clicks = [], set()

    def rerank(self, model: OnnxReranker | None) -> np.ndarray:
        """Order of the pool: the device model over behaviour + rows, else the cloud's order."""
        if self.order is not None and len(self.order) == len(self.pool):
            return self.order
        if model is None or len(self.pool) < 2 or not self.behavior:
            self.order = np.arange(len(self.pool))
            return self.order
        dim = self.pool.rows.shape[1]
        events = [(i, a) for i, a, _ in self.behavior if i in self.rows]
        if not events:
            self.order = np.arange(len(self.pool))
            return self.order
        behavior = np.stack([self.rows[i] for i, _ in events])[None, :, :dim]
        actions = np.zeros((1, len(events), 3), dtype=np.float32)
        actions[0, np.arange(len(events)), [a for _, a in events]] = 1.0
        scores = model.score(
            behavior, actions, self.pool.rows[None, :, :], self.pool.cloud_logit[None, :]
        )[0]
        self.order = np.argsort(-scores, kind="stable")
        return self.order

    def take_page(self, k: int, model: OnnxReranker | None) -> Pool:
        order = self.rerank(model)[:k]
        page = Pool(
            self.pool.items[order], self.pool.categories[order],
            self.pool.cloud_logit[order], self.pool.rows[order],
        )  # fmt: skip
        self.pool, self.order = self.pool.without(order), None
        self.page = list(zip(page.items.tolist(), page.categories.tolist(), strict=True))
        self.shown.extend(page.items.tolist())
        return page
