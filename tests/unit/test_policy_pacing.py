"""Properties of the request pacer: λ stays in its bounds, the long-run rate meets the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.policy.decision import Exploration, RequestPolicy
from device_agent.policy.pacing import Allowance, DualPacer

pytestmark = pytest.mark.unit


@given(
    budget=st.floats(0.0, 1.0),
    eta=st.floats(1e-3, 5.0),
    lam_min=st.floats(-5.0, 0.0),
    events=st.lists(st.tuples(st.floats(-10, 10), st.booleans()), max_size=200),
)
def test_lambda_never_below_its_floor(
    budget: float, eta: float, lam_min: float, events: list
) -> None:
    pacer = DualPacer(budget, eta=eta, lam_min=lam_min)
    for value, throttled in events:
        ask = pacer.decide(value)
        lam = pacer.update(ask, throttled=ask and throttled)
        # price = λ − surcharge is recomputed: equal up to float rounding (1e-15 seen)
        assert lam_min - 1e-9 <= pacer.price <= pacer.lam_max + 1e-9
        assert lam >= pacer.price - 1e-9  # a 429 only ever raises λ above the price


@settings(max_examples=50, deadline=None)
@given(
    budget=st.floats(0.0, 1.0),
    eta=st.floats(1e-3, 1.0),
    events=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=300),
)
def test_429s_do_not_move_the_long_run_rate(budget: float, eta: float, events: list) -> None:
    """Unclipped, Σ (x − b) = (λ_T − λ_0)/η exactly, refusals or not: the back-off is transient."""
    pacer = DualPacer(budget, eta=eta, lam_min=-math.inf, lam_max=math.inf)
    for sent, refused in events:
        pacer.update(sent, throttled=sent and refused)
    assert pacer.requests - budget * pacer.steps == pytest.approx(pacer.price / eta, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(budget=st.floats(0.02, 0.8), seed=st.integers(0, 2**31))
def test_rate_converges_to_budget_under_stationary_values(budget: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    eta, steps = 0.02, 10_000
    pacer = DualPacer(budget, eta=eta)
    for value in rng.random(steps):
        pacer.update(pacer.decide(float(value)))
    # Σ (x − b) = (λ_T − λ_0)/η (never clipped: λ < 0 asks at every step), λ ≤ 1 + η here
    assert abs(pacer.rate - budget) <= (1.0 + 2 * eta) / (eta * steps) + 0.01


def test_throttle_raises_the_price_for_a_while() -> None:
    granted, denied = DualPacer(0.1, eta=0.1, lam=1.0), DualPacer(0.1, eta=0.1, lam=1.0)
    granted.update(True)
    denied.update(True, throttled=True)
    assert denied.lam > granted.lam > 1.0
    for _ in range(100):
        granted.update(False)
        denied.update(False)
    assert denied.lam == pytest.approx(granted.lam, abs=1e-6)


def test_rejects_budget_outside_unit_interval_and_lambda_below_floor() -> None:
    with pytest.raises(ValueError):
        DualPacer(1.5)
    with pytest.raises(ValueError):
        DualPacer(0.1, lam=-2.0, lam_min=-1.0)


@settings(max_examples=50, deadline=None)
@given(
    budget=st.floats(0.01, 0.9),
    values=st.lists(st.floats(-5, 5), min_size=1, max_size=300),
    seed=st.integers(0, 2**31),
)
def test_allowance_caps_the_realised_rate(budget: float, values: list[float], seed: int) -> None:
    policy = RequestPolicy(DualPacer(budget, eta=0.1), Exploration(0.2, 0.5))
    allowance = Allowance(budget, burst=2.0)
    draws = np.random.default_rng(seed).random(len(values))
    for value, u in zip(values, draws, strict=True):
        policy.record(policy.decide(value, allowance, float(u)), allowance)
    # tokens: 1 at the start, `budget` per step; exploratory asks need one like any other
    assert policy.pacer.requests <= budget * policy.pacer.steps + 1.0 + 1e-9


@pytest.mark.parametrize("budget", [0.05, 0.10, 0.20, 0.30])
def test_agent_rule_spends_the_budget_with_exploration_refills_and_429s(budget: float) -> None:
    """A fleet sharing one price, each device its own allowance, values mostly ≤ 0 for some
    devices, 3 % forced refills and 20 % refusals: the realised rate is within ±5 % of b."""
    rng = np.random.default_rng(7)
    n_devices, steps = 10, 1500
    policy = RequestPolicy(DualPacer(budget, eta=0.05), Exploration(0.1, 0.5))
    allowances = [Allowance(budget, burst=2.0) for _ in range(n_devices)]
    offsets = np.linspace(-1.5, 1.0, n_devices)  # some devices rarely value a request > 0
    for _ in range(steps):
        for d in range(n_devices):
            forced = bool(rng.random() < 0.03)
            value = float(offsets[d] + rng.normal())
            choice = policy.decide(value, allowances[d], float(rng.random()), forced)
            policy.record(choice, allowances[d], throttled=choice.ask and rng.random() < 0.2)
    assert abs(policy.pacer.rate - budget) <= 0.05 * budget
