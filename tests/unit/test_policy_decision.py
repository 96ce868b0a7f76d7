"""The agent's request decision: exploration rate and propensities, budget spent by exploration."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.policy.decision import Exploration, RequestPolicy
from device_agent.policy.pacing import Allowance, DualPacer

pytestmark = pytest.mark.unit


def test_propensity_is_the_probability_of_the_action_taken() -> None:
    policy = RequestPolicy(DualPacer(0.5, lam=1.0), Exploration(0.2, 0.5))
    allowance = Allowance(0.5, burst=100.0, tokens=100.0)
    for value, greedy_p in ((2.0, 0.9), (0.0, 0.1)):  # above / below λ = 1
        ask = policy.decide(value, allowance, u=0.0)
        keep = policy.decide(value, allowance, u=0.999)
        assert (ask.ask, keep.ask) == (True, False)
        assert ask.propensity == pytest.approx(greedy_p)
        assert keep.propensity == pytest.approx(1.0 - greedy_p)


def test_no_token_no_ask_whatever_the_draw() -> None:
    policy = RequestPolicy(DualPacer(0.1), Exploration(0.5, 0.9))
    choice = policy.decide(10.0, Allowance(0.1, tokens=0.0), u=0.0)
    assert not choice.ask and choice.propensity == 1.0


def test_forced_requests_are_not_policy_decisions() -> None:
    policy = RequestPolicy(DualPacer(0.1, lam=5.0), Exploration(0.3))
    choice = policy.decide(-1.0, Allowance(0.1), u=0.99, forced=True)
    assert choice.ask and choice.forced and choice.propensity == 1.0


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3])
def test_exploration_rate_is_honoured(share: float) -> None:
    """Without a binding budget, the share of randomised asks among decisions the rule would not
    take is share × ask_prob, and among those it would take (1 − share) + share × ask_prob."""
    rng = np.random.default_rng(0)
    policy = RequestPolicy(DualPacer(1.0, lam=0.5), Exploration(share, 0.5))
    allowance = Allowance(1.0, burst=10.0)
    values = rng.random(40_000)
    asks = np.array([policy.decide(v, allowance, float(rng.random())).ask for v in values])
    below, above = values <= 0.5, values > 0.5
    assert asks[below].mean() == pytest.approx(share * 0.5, abs=0.01)
    assert asks[above].mean() == pytest.approx(1 - share + share * 0.5, abs=0.01)


def test_exploration_is_paid_from_the_budget() -> None:
    """The rule never wants (values below λ ≥ 0), yet exploratory asks spend tokens: the realised
    rate stays at most the budget plus the allowance's burst."""
    rng = np.random.default_rng(1)
    budget, steps = 0.05, 20_000
    policy = RequestPolicy(DualPacer(budget, eta=0.05), Exploration(0.5, 0.9))
    allowance = Allowance(budget, burst=2.0)
    asked = 0
    for _ in range(steps):
        choice = policy.decide(-1.0, allowance, float(rng.random()))
        policy.record(choice, allowance)
        asked += choice.ask
    assert asked <= budget * steps + 2.0
    assert asked >= 0.9 * budget * steps  # exploration alone uses the allowance


def test_exploration_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Exploration(1.0)
    with pytest.raises(ValueError):
        Exploration(0.1, ask_prob=0.0)
