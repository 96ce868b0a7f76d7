"""Feed sessions in the world: intent switches, drift, clicks, and counterfactual rollouts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from protos.actions import code_of
from simulator.cloud import Feedback, ReferenceCloud
from simulator.world import World


@dataclass
class SessionState:
    """Everything about one session at a step; `copy()` forks it for a counterfactual."""

    user: int
    intent: int
    interest: np.ndarray  # long-term interest, drifting with consumption
    rng: np.random.Generator
    step: int = 0
    pool: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    pool_step: int = -1  # step at which the pool was built
    pool_intent: int = -1  # true intent when the pool was built (ground truth only)
    shown: set[int] = field(default_factory=set)
    feedback: list[Feedback] = field(default_factory=list)
    last_switch_step: int = -1

    def copy(self) -> SessionState:
        return copy.deepcopy(self)


@dataclass(frozen=True)
class StepOutcome:
    """What happened at one feed step."""

    step: int
    page: np.ndarray
    clicks: np.ndarray  # bool per page position
    purchases: np.ndarray  # bool per page position
    refreshed: bool
    switched: bool  # the intent switched at the start of this step
    intent: int
    pool_intent: int
    expected_reward: float  # ground truth expectation for this page

    @property
    def reward(self) -> float:
        return float(self.clicks.sum()) + 3.0 * float(self.purchases.sum())


Reranker = Callable[[SessionState, np.ndarray], np.ndarray]


def start_session(world: World, user: int, seed: int) -> SessionState:
    rng = np.random.default_rng(seed)
    interest = world.users.interest[user].copy()
    intent = int(rng.choice(world.cfg.n_categories, p=interest))
    return SessionState(user=user, intent=intent, interest=interest, rng=rng)


def maybe_switch(world: World, state: SessionState) -> bool:
    """At the start of a step, the short-term intent may switch (hazard `switch_hazard`)."""
    if state.step == 0 or state.rng.random() >= world.cfg.switch_hazard:
        return False
    if state.rng.random() < 0.9:
        p = state.interest.copy()
        p[state.intent] = 0.0
        new = int(state.rng.choice(len(p), p=p / p.sum()))
    else:
        new = int(state.rng.integers(world.cfg.n_categories - 1))
        new += int(new >= state.intent)
    state.intent = new
    state.last_switch_step = state.step
    return True


def refresh_pool(world: World, cloud: ReferenceCloud, state: SessionState) -> None:
    """Ask the cloud for a fresh list built from everything the device has observed."""
    state.pool = cloud.recommend(state.user, state.feedback, world.cfg.pool_size, state.shown)
    state.pool_step = state.step
    state.pool_intent = state.intent


def feed_step(
    world: World,
    cloud: ReferenceCloud,
    state: SessionState,
    refresh: bool,
    rerank: Reranker | None = None,
) -> StepOutcome:
    """One feed step: the intent may switch, the pool may be refreshed, a page is shown."""
    switched = maybe_switch(world, state)
    if refresh or state.step == 0:
        refresh_pool(world, cloud, state)
    pool = rerank(state, state.pool) if rerank is not None and len(state.pool) else state.pool
    page = pool[: world.cfg.page_size]
    state.pool = pool[len(page) :]
    clicks, purchases, expected = show_page(world, state, page)
    outcome = StepOutcome(
        state.step, page, clicks, purchases, refresh or state.step == 0, switched,
        state.intent, state.pool_intent, expected,
    )  # fmt: skip
    state.step += 1
    return outcome


def show_page(
    world: World, state: SessionState, page: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """The user sees `page`: sampled clicks and purchases, and the expected reward of the page."""
    p_click = world.click_probs(state.user, state.intent, state.interest, page)
    p_buy = world.purchase_given_click(state.intent, page)
    expected = float(np.sum(p_click * (1.0 + world.cfg.purchase_reward * p_buy)))
    clicks = state.rng.random(len(page)) < p_click
    purchases = clicks & (state.rng.random(len(page)) < p_buy)
    _observe(world, state, page, clicks, purchases)
    return clicks, purchases, expected


def _observe(
    world: World, state: SessionState, page: np.ndarray, clicks: np.ndarray, buys: np.ndarray
) -> None:
    cat = world.catalog.category
    for item, clicked, bought in zip(page.tolist(), clicks.tolist(), buys.tolist(), strict=True):
        state.shown.add(item)
        action = code_of(clicked, bought)
        state.feedback.append(Feedback(item, action))
        if clicked:
            eta = world.cfg.drift_rate
            state.interest *= 1.0 - eta
            state.interest[cat[item]] += eta


def rollout_reward(
    world: World, cloud: ReferenceCloud, state: SessionState, first_refresh: bool, horizon: int
) -> float:
    """Expected reward over `horizon` steps: refresh (or not) now, then keep the local list."""
    total = 0.0
    for h in range(horizon):
        total += feed_step(world, cloud, state, refresh=first_refresh and h == 0).expected_reward
    return total


def true_uplift(
    world: World,
    cloud: ReferenceCloud,
    state: SessionState,
    horizon: int = 3,
    n_rollouts: int = 16,
    seed: int = 0,
) -> float:
    """E[reward | refresh now] − E[reward | keep local list], by paired rollouts.

    Both branches of a pair share their random numbers (common random numbers), so the
    difference has low variance; the state passed in is not modified.
    """
    diffs = np.empty(n_rollouts)
    for r in range(n_rollouts):
        branch_seed = np.random.SeedSequence([seed, r])
        rewards = []
        for refresh in (True, False):
            fork = state.copy()
            fork.rng = np.random.default_rng(branch_seed)
            rewards.append(rollout_reward(world, cloud, fork, refresh, horizon))
        diffs[r] = rewards[0] - rewards[1]
    return float(diffs.mean())
