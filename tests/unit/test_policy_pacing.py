"""Properties of the request pacer: λ stays feasible, the long-run rate meets the budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.policy.pacing import DualPacer

pytestmark = pytest.mark.unit


@given(
    budget=st.floats(0.0, 1.0),
    eta=st.floats(1e-3, 5.0),
    events=st.lists(st.tuples(st.floats(-10, 10), st.booleans()), max_size=200),
)
def test_lambda_never_negative(budget: float, eta: float, events: list) -> None:
    pacer = DualPacer(budget, eta=eta)
    for value, throttled in events:
        ask = pacer.decide(value)
        assert pacer.update(ask, throttled=ask and throttled) >= 0.0


@settings(max_examples=25, deadline=None)
@given(budget=st.floats(0.02, 0.8), seed=st.integers(0, 2**31))
def test_rate_converges_to_budget_under_stationary_values(budget: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    eta, steps = 0.02, 20_000
    pacer = DualPacer(budget, eta=eta)
    for value in rng.random(steps):
        pacer.update(pacer.decide(float(value)))
    # Σ (x − b) = (λ_T − λ_0)/η up to clipping at 0, and λ stays ≤ 1 + η for values in [0, 1)
    assert abs(pacer.rate - budget) <= (1.0 + 2 * eta) / (eta * steps) + 0.01


def test_throttle_raises_lambda_more_than_a_granted_request() -> None:
    granted, denied = DualPacer(0.1, eta=0.1, lam=1.0), DualPacer(0.1, eta=0.1, lam=1.0)
    granted.update(True)
    denied.update(True, throttled=True)
    assert denied.lam > granted.lam > 1.0


def test_rejects_budget_outside_unit_interval() -> None:
    with pytest.raises(ValueError):
        DualPacer(1.5)


@given(
    budget=st.floats(0.01, 0.9),
    values=st.lists(st.floats(-5, 5), min_size=1, max_size=300),
)
def test_allowance_caps_the_realised_rate(budget: float, values: list[float]) -> None:
    pacer = DualPacer(budget, eta=0.1, burst=2.0)
    for value in values:
        pacer.update(pacer.decide(value), wanted=pacer.wants(value))
    assert pacer.requests <= budget * pacer.steps + 1.0 + 1e-9
