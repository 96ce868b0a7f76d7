"""One device's session: cached candidate pool, behaviour window, re-rank order, request view."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from device_agent.inference.reranker import OnnxReranker
from device_agent.policy.detector import ShiftPrior
from device_agent.policy.features import SessionView
from device_agent.policy.pacing import Allowance
from protos.actions import Action
from tandem_core.behavior import behavior_inputs

SHOWN_KEPT = 400  # distinct items already shown: excluded from cloud requests and fallbacks
CLICKS_KEPT = 50  # rows of the last clicks: the private mode's interest encoder reads them


@dataclass
class Pool:
    """Cached candidates from the cloud, best first by the cloud."""

    items: np.ndarray
    categories: np.ndarray
    cloud_logit: np.ndarray
    rows: np.ndarray
    embedding_version: str = ""  # of `rows` (the cloud list's); "" = unknown
    request_id: str = ""  # the cloud response the pool came from

    @staticmethod
    def empty(dim: int = 0) -> Pool:
        z = np.empty(0, dtype=np.float32)
        return Pool(np.empty(0, np.int64), np.empty(0, np.int64), z, np.empty((0, dim), np.float32))

    def subset(self, index: np.ndarray) -> Pool:
        """The items at `index` (positions or a mask), with the list's versions."""
        return Pool(
            self.items[index], self.categories[index], self.cloud_logit[index], self.rows[index],
            self.embedding_version, self.request_id,
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def without(self, taken: np.ndarray) -> Pool:
        keep = np.ones(len(self), dtype=bool)
        keep[taken] = False
        return self.subset(keep)

    def topped_up(self, extra: Sequence[tuple[int, int]]) -> Pool:
        """This page with (item, category) pairs from outside the pool after its items; they
        carry no embedding row (zeros) and no cloud score (NaN)."""
        n = len(extra)
        items = np.array([i for i, _ in extra], dtype=np.int64)
        cats = np.array([c for _, c in extra], dtype=np.int64)
        rows = np.zeros((n, self.rows.shape[1]), dtype=self.rows.dtype)
        return Pool(
            np.concatenate([self.items, items]), np.concatenate([self.categories, cats]),
            np.concatenate([self.cloud_logit, np.full(n, np.nan, np.float32)]),
            np.concatenate([self.rows, rows]), self.embedding_version, self.request_id,
        )  # fmt: skip


@dataclass(frozen=True)
class PageDecision:
    """Why the last page looked as it did: logged with the events of its items."""

    source: str  # cloud | local
    asked_cloud: bool
    value: float
    threshold: float
    propensity: float  # of the decision taken; 1.0 while the policy does not randomise
    request_id: str
    features: tuple[float, ...] = ()  # the request-value features (policy.features.FEATURES)
    step: int = 0  # the session's page counter of this page (1, 2, ...); 0 = unset


@dataclass
class DeviceSession:
    device_id: str
    view: SessionView
    allowance: Allowance
    behavior_len: int
    pool: Pool = field(default_factory=Pool.empty)
    order: np.ndarray | None = None  # re-rank order of the pool; None = stale
    order_by: OnnxReranker | None = None  # the model `order` came from
    behavior: deque[tuple[int, int, int]] = field(init=False)  # (item, action code, ts ms)
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # embedding rows of known items
    shown: OrderedDict[int, int] = field(default_factory=OrderedDict)  # item → category, least
    # recently shown first, at most SHOWN_KEPT
    clicked: deque[np.ndarray] = field(init=False)  # rows of the last clicks, oldest first
    page: list[tuple[int, int]] = field(default_factory=list)  # (item, category) last served
    page_clicks: set[int] = field(default_factory=set)
    # (item, action) already counted in the fleet's popularity for the page being served: one
    # app cannot push an item up other devices' fallback pages by repeating an event
    page_noted: set[tuple[int, int]] = field(default_factory=set)
    page_decision: PageDecision | None = None
    had_cloud_list: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    steps: int = 0
    cloud_requests: int = 0
    shift_prior: ShiftPrior | None = None  # the device's own shift rate, once a detector runs

    def __post_init__(self) -> None:
        self.behavior = deque(maxlen=self.behavior_len)
        self.clicked = deque(maxlen=CLICKS_KEPT)

    def set_pool(self, pool: Pool) -> None:
        """A fresh list from the cloud replaces the cache (EdgeRec: the pool is the unit)."""
        if pool.embedding_version != self.pool.embedding_version:
            self.rows = {}  # rows of another embedding space cannot be mixed with the new ones
            self.clicked.clear()
        self.pool, self.order, self.had_cloud_list = pool, None, True
        self.rows = {i: self.rows[i] for i, *_ in self.behavior if i in self.rows}
        for item, row in zip(pool.items.tolist(), pool.rows, strict=True):
            self.rows[item] = row
        self.view.on_pool(pool.categories)

    def record_event(self, item: int, action: int, ts_ms: int) -> None:
        self.behavior.append((item, action, ts_ms))
        if action == Action.CLICK and item in self.rows:
            self.clicked.append(self.rows[item])
        if action != Action.EXPOSURE and any(item == i for i, _ in self.page):
            self.page_clicks.add(item)
        self.order = None  # every event re-ranks the pool

    def close_page(self) -> None:
        """The previous page's outcome, as the request view needs it (clicks arrived as events)."""
        if self.page:
            cats = np.array([c for _, c in self.page], dtype=np.int64)
            clicked = np.array([i in self.page_clicks for i, _ in self.page], dtype=bool)
            if self.shift_prior is not None:
                self.shift_prior.on_page(self.view.pool_hist, cats, clicked)
            self.view.on_page(cats, clicked)
        # the view assumes pages come off the front of the pool; re-ranked pages do not
        self.view.pool_cats = self.pool.categories.copy()
        self.page, self.page_clicks, self.page_noted = [], set(), set()

    def reranker_inputs(self) -> tuple[np.ndarray, ...] | None:
        """The ONNX feeds for the pool: the behaviour window padded as in training
        (tandem_core.behavior), the candidates' rows and the cloud's logits; None = no events."""
        events = [(i, a) for i, a, _ in self.behavior if i in self.rows]
        if not events:
            return None
        dim = self.pool.rows.shape[1]
        table = np.stack([self.rows[i][:dim] for i, _ in events])
        behavior, actions = behavior_inputs(
            table, np.arange(len(events)), [a for _, a in events], self.behavior_len
        )
        return behavior, actions, self.pool.rows[None, :, :], self.pool.cloud_logit[None, :]

    def rerank(self, model: OnnxReranker | None) -> np.ndarray:
        """Order of the pool: the device model over behaviour + rows, else the cloud's order."""
        if self.order is not None and self.order_by is model and len(self.order) == len(self.pool):
            return self.order  # cached for this model only: a swap or a refused model re-ranks
        self.order_by = model
        inputs = None if model is None or len(self.pool) < 2 else self.reranker_inputs()
        if model is None or inputs is None:
            self.order = np.arange(len(self.pool))
            return self.order
        scores = model.score(*inputs)[0]
        self.order = np.argsort(-scores, kind="stable")
        return self.order

    def take_page(self, k: int, model: OnnxReranker | None) -> Pool:
        order = self.rerank(model)[:k]
        page = self.pool.subset(order)
        self.pool, self.order = self.pool.without(order), None
        self.page = []
        self.show(list(zip(page.items.tolist(), page.categories.tolist(), strict=True)))
        return page

    def show(self, pairs: Sequence[tuple[int, int]]) -> None:
        """(item, category) pairs join the page being served and become the most recently shown."""
        self.page.extend(pairs)
        for item, category in pairs:
            self.shown.pop(item, None)
            self.shown[item] = category
        while len(self.shown) > SHOWN_KEPT:
            self.shown.popitem(last=False)

    def repeats(self) -> list[tuple[int, int]]:
        """Items shown before and not on the page being served, least recently shown first."""
        on_page = {item for item, _ in self.page}
        return [(i, c) for i, c in self.shown.items() if i not in on_page]
