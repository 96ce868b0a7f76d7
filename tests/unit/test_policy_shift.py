"""The interest-shift score rises after a synthetic intent switch; Page–Hinkley sees a CTR drop."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.policy.features import FEATURES, SessionView, request_features
from device_agent.policy.shift import cosine_drift, page_hinkley

pytestmark = pytest.mark.unit


def _view_with_pool_of(category: int) -> SessionView:
    view = SessionView(n_categories=8, pool_size=48, page_size=4)
    view.on_pool(np.full(48, category))
    view.on_page(np.full(4, category), np.array([True, False, True, False]))
    return view


def test_shift_higher_after_switch_than_without() -> None:
    stay, switch = _view_with_pool_of(0), _view_with_pool_of(0)
    for _ in range(2):
        stay.on_page(np.array([0, 0, 0, 0]), np.array([True, False, False, False]))
        switch.on_page(np.array([0, 5, 0, 0]), np.array([False, True, False, False]))
    switch.on_page(np.zeros(4, dtype=int), np.zeros(4, dtype=bool))
    stay.on_page(np.zeros(4, dtype=int), np.array([False, True, False, False]))
    assert switch.shift() > stay.shift()
    assert switch.cosine_drift() > stay.cosine_drift()


def test_cosine_drift_zero_when_clicks_match_pool() -> None:
    pool = np.zeros(4)
    pool[1] = 1.0
    assert cosine_drift(np.array([1, 1]), np.array([True, True]), pool) == pytest.approx(0.0)


def test_page_hinkley_grows_after_click_rate_drops() -> None:
    before = np.tile([1.0, 0.0], 10)
    assert page_hinkley(np.concatenate([before, np.zeros(20)])) > page_hinkley(
        np.concatenate([before, before])
    )


def test_features_are_finite_and_ordered() -> None:
    x = request_features(_view_with_pool_of(2))
    assert x.shape == (len(FEATURES),) and np.all(np.isfinite(x))
    assert x[FEATURES.index("steps_since_refresh")] == 1
