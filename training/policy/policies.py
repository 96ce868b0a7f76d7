"""Request policies as scores on the device's view: a policy asks the cloud when score > θ."""

from __future__ import annotations

from collections.abc import Callable

from device_agent.policy.features import SessionView, request_features
from device_agent.policy.value import RequestValueModel

Score = Callable[[SessionView, float], float]  # (view, uniform tie-break u in [0, 1)) -> score


def rand_q(view: SessionView, u: float) -> float:
    return u


def static_q(view: SessionView, u: float) -> float:
    """Every n steps; u interpolates between n and n + 1 to hit any rate."""
    return view.steps_since_refresh + u


def pool_q(view: SessionView, u: float) -> float:
    """When the pool runs low."""
    return -len(view.pool_cats) + u


def edgerec_q(view: SessionView, u: float) -> float:
    """EdgeRec triggers (Gong et al., "EdgeRec: recommender system on edge in Mobile Taobao",
    CIKM 2020): after a click (score 100) or after k exposures without a click."""
    last = list(view.recent)[-view.page_size :]
    clicked = any(k for _, k in last) and view.steps_since_refresh > 0
    return (100.0 if clicked else float(view.skip_streak)) + u


def shift_q(view: SessionView, u: float) -> float:
    return view.shift() + 1e-6 * u


def value_score(model: RequestValueModel) -> Score:
    def score(view: SessionView, u: float) -> float:
        return model.value(request_features(view)) + 1e-6 * u

    return score


# (score, search range of θ) per tuned baseline
BASELINES: dict[str, tuple[Score, tuple[float, float]]] = {
    "RandQ": (rand_q, (0.0, 1.0)),
    "StaticQ": (static_q, (0.0, 32.0)),
    "PoolQ": (pool_q, (-50.0, 1.0)),
    "EdgeRecQ": (edgerec_q, (0.0, 102.0)),
    "ShiftQ": (shift_q, (0.0, 1.0)),
}
