"""The world is seeded, exposes its ground truth, and has honest counterfactuals."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cloud import ReferenceCloud, allocate
from simulator.logs import generate_traffic
from simulator.session import feed_step, start_session, true_uplift
from simulator.world import World, WorldConfig

pytestmark = pytest.mark.unit

TINY = WorldConfig(n_users=80, n_items=3000, n_categories=12, sessions_per_user=2.0)


@pytest.fixture(scope="module")
def world() -> World:
    return World(TINY)


def test_same_seed_gives_identical_logs() -> None:
    cfg = WorldConfig(n_users=30, n_items=1500, n_categories=8, seed=7)
    logs = []
    for _ in range(2):
        w = World(cfg)
        logs.append(generate_traffic(w, ReferenceCloud(w), seed=cfg.seed).impressions)
    for name in ("user", "item", "click", "purchase", "timestamp", "intent"):
        np.testing.assert_array_equal(getattr(logs[0], name), getattr(logs[1], name))


def test_different_seed_gives_different_logs() -> None:
    logs = []
    for seed in (1, 2):
        w = World(WorldConfig(n_users=30, n_items=1500, n_categories=8, seed=seed))
        logs.append(generate_traffic(w, ReferenceCloud(w), seed=seed).impressions)
    assert len(logs[0]) != len(logs[1]) or not np.array_equal(logs[0].item, logs[1].item)


def test_click_probs_follow_position_bias_and_intent(world: World) -> None:
    user = 0
    interest = world.users.interest[user]
    intent = int(np.argmax(interest))
    on_intent = np.flatnonzero(world.catalog.category == intent)[:1]
    off_intent = np.flatnonzero(world.catalog.category != intent)[:1]
    same_item_twice = np.concatenate([on_intent, on_intent])
    p = world.click_probs(user, intent, interest, same_item_twice)
    assert p[0] > p[1] > 0  # the same item is examined less at a lower position
    p_on = world.click_probs(user, intent, interest, on_intent)[0]
    p_off_intent_user = world.click_probs(
        user, (intent + 1) % TINY.n_categories, interest, on_intent
    )
    assert p_on > p_off_intent_user[0]
    assert np.all(world.attraction(user, intent, interest, off_intent) > 0)


def test_cloud_is_deterministic_and_excludes_shown(world: World) -> None:
    cloud = ReferenceCloud(world)
    first = cloud.recommend(3, [], 40, set())
    again = cloud.recommend(3, [], 40, set())
    np.testing.assert_array_equal(first, again)
    shown = set(first[:10].tolist())
    later = cloud.recommend(3, [], 40, shown)
    assert not shown & set(later.tolist())
    assert len(later) == 40


def test_allocate_sums_to_k() -> None:
    share = np.array([0.5, 0.3, 0.2])
    assert allocate(7, share).sum() == 7
    assert allocate(10, share).tolist() == [5, 3, 2]


def test_counterfactual_does_not_touch_the_state(world: World) -> None:
    cloud = ReferenceCloud(world)
    state = start_session(world, 5, seed=1)
    for _ in range(3):
        feed_step(world, cloud, state, refresh=False)
    before = (state.step, state.intent, state.pool.copy(), len(state.feedback))
    true_uplift(world, cloud, state, n_rollouts=4)
    assert (state.step, state.intent, len(state.feedback)) == (before[0], before[1], before[3])
    np.testing.assert_array_equal(state.pool, before[2])


def _uplifts(world: World, after_switch: bool, n_users: int) -> np.ndarray:
    """True refresh uplift right after a switch, or long after a refresh with no switch."""
    cloud = ReferenceCloud(world)
    out = []
    for user in range(n_users):
        state = start_session(world, user % world.cfg.n_users, seed=10_000 + user)
        for k in range(30):
            outcome = feed_step(world, cloud, state, refresh=k < 6)
            if len(state.pool) < 3 * world.cfg.page_size:
                break
            if after_switch and outcome.switched and k >= 6:
                out.append(true_uplift(world, cloud, state, seed=user))
                break
            if not after_switch and k == 8:
                if state.last_switch_step < 0:
                    out.append(true_uplift(world, cloud, state, seed=user))
                break
    return np.asarray(out)


def test_refresh_uplift_is_positive_after_a_switch_and_near_zero_without() -> None:
    world = World(WorldConfig(n_users=400, n_items=12_000, n_categories=24, seed=3))
    switched = _uplifts(world, after_switch=True, n_users=400)
    aligned = _uplifts(world, after_switch=False, n_users=400)
    assert len(switched) >= 100 and len(aligned) >= 60
    se_switched = switched.std() / np.sqrt(len(switched))
    se_aligned = aligned.std() / np.sqrt(len(aligned))
    assert switched.mean() > 3 * se_switched  # clearly positive
    assert abs(aligned.mean()) < 3 * se_aligned + 0.1  # indistinguishable from ~0
    assert switched.mean() > aligned.mean() + 2 * np.hypot(se_switched, se_aligned)
