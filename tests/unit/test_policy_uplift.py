"""Every uplift estimator recovers the sign of a known synthetic uplift."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from training.policy.uplift import (
    class_transformation,
    dr_learner,
    fit_mlp,
    mlp_scorer,
    s_learner,
    t_learner,
)

pytestmark = pytest.mark.unit


def _synthetic(n: int = 4000, p: float = 0.3) -> tuple:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    tau = np.where(x[:, 0] > 0, 1.5, -1.0)
    w = (rng.random(n) < p).astype(float)
    y = 0.5 * x[:, 1] + w * tau + 0.3 * rng.normal(size=n)
    return x, w, y, tau, p


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
