"""The oracle's rollouts, its choices on a tiny world, and the comparison's rate matching."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.cloud import ReferenceCloud
from simulator.session import true_uplift
from simulator.world import World, WorldConfig
from training.policy.compare import TOLERANCE, match_rate
from training.policy.device import (
    CachedCloud,
    DeviceSession,
    RunResult,
    run_plan,
    session_plan,
    split_users,
)
from training.policy.oracle import OracleRule, UpliftCache, paired_uplift
from training.policy.policies import ThresholdRule, rand_q

pytestmark = pytest.mark.unit

TINY = WorldConfig(n_users=40, n_items=2000, n_categories=8, pool_size=16)


@pytest.fixture(scope="module")
def tiny() -> tuple[World, CachedCloud, list[tuple[int, int, int]]]:
    world = World(TINY)
    _, test_users = split_users(TINY.n_users)
    return world, CachedCloud(world), session_plan(TINY.n_users, test_users, 24, 5, mean_steps=7)


def test_cached_cloud_answers_as_the_reference_cloud(tiny: tuple) -> None:
    world, cached, plan = tiny
    reference = ReferenceCloud(world)
    dev = DeviceSession.start(world, cached, *plan[0][:2])
    for t in range(5):
        dev.step(t == 3)
        fb, shown = dev.state.feedback, dev.state.shown
        for _ in range(2):  # the second answer comes from the memo
            assert np.array_equal(cached.recommend(dev.state.user, fb, 16, shown),
                                  reference.recommend(dev.state.user, fb, 16, shown))  # fmt: skip


def test_paired_uplift_is_true_uplift_when_no_refill_falls_inside(tiny: tuple) -> None:
    world, cloud, plan = tiny
    dev = DeviceSession.start(world, cloud, *plan[1][:2])
    dev.step(False)  # the initial list: 12 items left, 3 pages
    before = dev.state.copy()
    up = paired_uplift(world, cloud, dev.state, horizon=3, n_rollouts=4, seed=3)
    assert up.reward == pytest.approx(true_uplift(world, cloud, dev.state, 3, 4, seed=3))
    assert up.requests == 1.0
    after = dev.state  # the rollouts ran on forks
    assert (after.step, after.shown, after.feedback) == (before.step, before.shown, before.feedback)
    assert np.array_equal(after.interest, before.interest) and np.array_equal(
        after.pool, before.pool
    )


class RecordingOracle(OracleRule):
    """The oracle, noting the true uplift of every step it decided and what it chose."""

    def __init__(self, cache: UpliftCache, lam: float) -> None:
        super().__init__(cache, lam)
        self.log: list[tuple[float, bool]] = []

    def decide(self, u: float, forced: bool) -> bool:
        key, horizon = (self.index, tuple(self.history)), self.n_steps - self.dev.state.step
        ask = super().decide(u, forced)
        if not forced:  # a cache hit: the state has not moved yet
            self.log.append((self.cache.get(key, self.dev, horizon).reward, ask))
        return ask


def test_oracle_asks_where_the_true_uplift_is_high(tiny: tuple) -> None:
    world, cloud, plan = tiny
    rule = RecordingOracle(UpliftCache(n_rollouts=4), lam=1.0)
    run_plan(world, cloud, plan, rule)
    uplift, asked = np.array(rule.log).T
    asked = asked.astype(bool)
    assert 0 < asked.sum() < len(asked)
    # random asks at the same rate would pick the mean uplift of these states
    assert uplift[asked].mean() > uplift.mean() + 0.5


def test_oracle_beats_random_at_the_same_rate(tiny: tuple) -> None:
    world, cloud, plan = tiny
    cache = UpliftCache(n_rollouts=4)

    def oracle(lam: float) -> RunResult:
        return run_plan(world, cloud, plan, OracleRule(cache, lam))

    lam, by_oracle, _ = match_rate(oracle, 0.2, (-5.0, 20.0), start=0.5, tol=0.1)
    target = by_oracle.rate
    _, by_chance, _ = match_rate(
        lambda th: run_plan(world, cloud, plan, ThresholdRule(rand_q, th)), target, (0.0, 1.0)
    )
    assert abs(by_chance.rate - target) <= TOLERANCE * target
    assert by_oracle.expected_reward > by_chance.expected_reward
    # and per device, under each session's own allowance
    per_device = run_plan(world, cloud, plan, OracleRule(cache, lam, allowance_budget=0.2))
    assert (
        per_device.expected_reward
        > run_plan(world, cloud, plan, ThresholdRule(None, 0)).expected_reward
    )


@settings(max_examples=40, deadline=None)
@given(
    target=st.floats(0.03, 0.5),
    centre=st.floats(-3.0, 8.0),
    slope=st.floats(0.2, 5.0),
    steps=st.integers(50, 5000),
)
def test_rate_matching_lands_within_tolerance(
    target: float, centre: float, slope: float, steps: int
) -> None:
    """On a falling rate curve from 1 to 0 over the bracket, quantised like a real plan's."""

    def sigmoid(theta: float) -> float:
        return 1.0 / (1.0 + np.exp(slope * (theta - centre)))

    def rate_at(theta: float) -> RunResult:
        share = (sigmoid(theta) - sigmoid(20.0)) / (sigmoid(-10.0) - sigmoid(20.0))
        return RunResult(round(steps * share) / steps, 0.0, 0.0, 0.0, 0.0, 0.0)

    if steps * target < 1 / TOLERANCE:  # a rate this coarse cannot land within ±5 %
        return
    _, result, evals = match_rate(rate_at, target, (-10.0, 20.0), max_evals=40)
    assert abs(result.rate - target) <= TOLERANCE * target
    assert evals <= 40
