"""What a device observes of its session, and the request-value features built from it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from device_agent.policy.shift import (
    category_hist,
    click_divergence,
    cosine_drift,
    page_hinkley,
    shift_score,
    skip_pressure,
)

FEATURES = (
    "shift", "click_divergence", "skip_pressure", "steps_since_refresh", "pool_remaining",
    "ctr_since_refresh", "ctr_session", "skip_streak", "pool_share_in_clicked",
    "clicks_since_refresh", "pool_empty", "session_step",
)  # fmt: skip


@dataclass
class SessionView:
    """The device's own record: pool categories, its events, steps since the last refresh."""

    n_categories: int
    pool_size: int
    page_size: int
    window: int = 16
    pool_hist: np.ndarray = field(init=False)
    pool_cats: np.ndarray = field(init=False)  # categories of the items still cached, in order
    recent: deque[tuple[int, bool]] = field(init=False)
    since_refresh: list[bool] = field(default_factory=list)  # click flag per exposure
    steps_since_refresh: int = 0
    skip_streak: int = 0  # exposures without a click since the last refresh
    step: int = 0
    clicks: int = 0
    exposures: int = 0

    def __post_init__(self) -> None:
        self.pool_hist = np.zeros(self.n_categories)
        self.pool_cats = np.empty(0, dtype=np.int64)
        self.recent = deque(maxlen=self.window)

    def on_pool(self, categories: np.ndarray) -> None:
        """A fresh list arrived (categories are public catalog metadata)."""
        self.pool_cats = np.asarray(categories, dtype=np.int64)
        self.pool_hist = category_hist(self.pool_cats, self.n_categories)
        self.since_refresh, self.steps_since_refresh, self.skip_streak = [], 0, 0

    def on_page(self, categories: np.ndarray, clicked: np.ndarray) -> None:
        """A page was shown from the pool and the user reacted."""
        self.pool_cats = self.pool_cats[len(categories) :]
        for c, k in zip(np.asarray(categories).tolist(), np.asarray(clicked).tolist(), strict=True):
            self.recent.append((int(c), bool(k)))
            self.since_refresh.append(bool(k))
            self.skip_streak = 0 if k else self.skip_streak + 1
        self.clicks += int(np.sum(clicked))
        self.exposures += len(categories)
        self.steps_since_refresh += 1
        self.step += 1

    def recent_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.recent:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=bool)
        cats, clicked = zip(*self.recent, strict=True)
        return np.asarray(cats, dtype=np.int64), np.asarray(clicked, dtype=bool)

    def shift(self) -> float:
        cats, clicked = self.recent_arrays()
        return shift_score(
            cats, clicked, self.pool_hist, self.skip_streak, self.steps_since_refresh
        )

    def cosine_drift(self) -> float:
        cats, clicked = self.recent_arrays()
        return cosine_drift(cats, clicked, self.pool_hist)

    def page_hinkley(self) -> float:
        return page_hinkley(np.asarray(self.since_refresh, dtype=np.float64))


def request_features(view: SessionView) -> np.ndarray:
    """Feature vector (float32, order FEATURES) for the value model; observable on device only."""
    cats, clicked = view.recent_arrays()
    div = click_divergence(cats, clicked, view.pool_hist)
    n_since = len(view.since_refresh)
    clicks_since = int(sum(view.since_refresh))
    clicked_cats = np.unique(cats[clicked])
    remaining = view.pool_cats
    share = float(np.isin(remaining, clicked_cats).mean()) if len(remaining) else 0.0
    return np.array(
        [
            view.shift(),
            div,
            skip_pressure(view.skip_streak),
            view.steps_since_refresh,
            len(remaining) / view.pool_size,
            clicks_since / n_since if n_since else 0.0,
            view.clicks / view.exposures if view.exposures else 0.0,
            view.skip_streak,
            share,
            clicks_since,
            float(len(remaining) < view.page_size),
            view.step,
        ],
        dtype=np.float32,
    )
