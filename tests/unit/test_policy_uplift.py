"""Every uplift estimator recovers the sign (ours also the rank order) of a synthetic uplift."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from training.policy.uplift import (
    class_transformation,
    dr_learner,
    fit_mlp,
    mlp_scorer,
    r_learner_mlp,
    s_learner,
    t_learner,
    tarnet,
)

pytestmark = pytest.mark.unit


def _synthetic(n: int = 4000, p: float = 0.3) -> tuple:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    tau = np.where(x[:, 0] > 0, 1.5, -1.0)
    w = (rng.random(n) < p).astype(float)
    y = 0.5 * x[:, 1] + w * tau + 0.3 * rng.normal(size=n)
    return x, w, y, tau, p


def _confounded(n: int = 6000) -> tuple:
    """A log like the agent's: ε-greedy on a rule that asks where the baseline outcome is high,
    so asked rows look better for reasons other than the request (the naive difference is
    biased); the per-row P(ask) is logged. True uplift: three levels along x0."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    tau = np.select([x[:, 0] > 0.7, x[:, 0] > -0.7], [2.0, 0.5], -1.0)
    greedy = x[:, 1] > 0.0
    p = np.where(greedy, 0.9, 0.1)  # ε = 0.2, ask_prob = 0.5
    w = (rng.random(n) < p).astype(float)
    y = 2.0 * x[:, 1] + w * tau + 0.5 * rng.normal(size=n)
    return x, w, y, tau, p


@pytest.mark.parametrize("name", ["tarnet", "r", "dr"])
def test_propensity_learners_recover_sign_and_order_on_a_confounded_log(name: str) -> None:
    x, w, y, tau, p = _confounded()
    with threadpool_limits(1):
        score = {
            "tarnet": lambda: mlp_scorer(tarnet(x, w, y, p)),
            "r": lambda: mlp_scorer(r_learner_mlp(x, w, y, p)),
            "dr": lambda: dr_learner(x, w, y, p),
        }[name]()
        pred = score(x)
    levels = [pred[tau == t].mean() for t in (-1.0, 0.5, 2.0)]
    assert levels[0] < 0 < levels[2]
    assert levels[0] < levels[1] < levels[2]  # rank order of the three true uplift levels
    naive = y[w == 1].mean() - y[w == 0].mean()
    assert naive > 2.0 > tau.mean()  # the log is confounded: the raw difference is far off


@pytest.mark.parametrize("name", ["s", "t", "ct", "dr", "mlp"])
def test_estimator_recovers_uplift_sign(name: str) -> None:
    x, w, y, tau, p = _synthetic()
    with threadpool_limits(1):
        score = {
            "s": lambda: s_learner(x, w, y),
            "t": lambda: t_learner(x, w, y),
            "ct": lambda: class_transformation(x, w, y, p),
            "dr": lambda: dr_learner(x, w, y, p),
            "mlp": lambda: mlp_scorer(fit_mlp(x, tau)),
        }[name]()
        pred = score(x)
    assert pred[tau > 0].mean() > 0 > pred[tau < 0].mean()
