"""Glue between a world session and the device's own view of it (only what a device observes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from device_agent.policy.features import SessionView
from simulator.cloud import Feedback, ReferenceCloud
from simulator.session import SessionState, StepOutcome, feed_step, start_session
from simulator.world import World, WorldConfig
from training.policy.worlds import WORLDS

# World used by the latency benchmark: small enough to build in a second.
BENCH_WORLD: dict[str, Any] = dict(n_users=1500, n_items=20_000, n_categories=32)


def bench_world(seed: int) -> tuple[World, ReferenceCloud]:
    world = World(WorldConfig(seed=seed, **BENCH_WORLD))
    return world, ReferenceCloud(world)


class CachedCloud(ReferenceCloud):
    """The reference cloud with its answers remembered.

    `recommend` is deterministic given (user, the last `recent_window` events, the exclusions),
    and the oracle's paired rollouts and the rate-matching passes ask the same question many
    times (every fork of a state, every pass that took the same decisions so far). Keys are
    hashes of that triple; the memo is dropped whole when it reaches `max_entries`.
    """

    def __init__(self, world: World, max_entries: int = 50_000) -> None:
        super().__init__(world)
        self.max_entries = max_entries
        self._memo: dict[int, np.ndarray] = {}

    def recommend(
        self, user: int, feedback: Sequence[Feedback], k: int, exclude: set[int]
    ) -> np.ndarray:
        key = hash((user, k, tuple(feedback[-self.recent_window :]), frozenset(exclude)))
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= self.max_entries:
                self._memo.clear()
            hit = super().recommend(user, feedback, k, exclude)
            hit.setflags(write=False)  # shared by every caller with the same question
            self._memo[key] = hit
        return hit


@lru_cache(maxsize=16)
def judged_world(name: str, pool_size: int | None = None) -> tuple[World, CachedCloud]:
    """A world of `training.policy.worlds.WORLDS` with a cached cloud (built once per process);
    `pool_size` changes only how many items a cloud list holds."""
    cfg = WORLDS[name] if pool_size is None else replace(WORLDS[name], pool_size=pool_size)
    world = World(cfg)
    return world, CachedCloud(world)


def agent_pool_size(name: str, budget: float) -> int:
    """Items the agent asks per request at this budget (`device_agent.build.request_size`)."""
    from device_agent.build import request_size  # the agent's build: grpc and all, import late
    from device_agent.settings import FeedSettings, PacingSettings

    cfg = WORLDS[name]
    feed = FeedSettings(pool_size=cfg.pool_size, page_size=cfg.page_size)
    return request_size(feed, PacingSettings(request_budget=budget))


def refill_forced(world: World, state: SessionState) -> bool:
    """The agent's rule: a pool that cannot fill the next page is refilled (a counted request)."""
    return len(state.pool) < world.cfg.page_size


@dataclass
class DeviceSession:
    """A world session (ground truth) paired with the device's view of it."""

    world: World
    cloud: ReferenceCloud
    state: SessionState
    view: SessionView

    @staticmethod
    def start(world: World, cloud: ReferenceCloud, user: int, seed: int) -> DeviceSession:
        cfg = world.cfg
        view = SessionView(cfg.n_categories, cfg.pool_size, cfg.page_size)
        return DeviceSession(world, cloud, start_session(world, user, seed), view)

    def step(self, refresh: bool) -> StepOutcome:
        """One feed step; the first step always fetches the initial list (not a request)."""
        out = feed_step(self.world, self.cloud, self.state, refresh)
        cat = self.world.catalog.category
        if out.refreshed:
            self.view.on_pool(cat[np.concatenate([out.page, self.state.pool])])
        self.view.on_page(cat[out.page], out.clicks)
        return out

    def switched_since_pool(self) -> bool:
        """Ground truth: the intent switched after the cached pool was built."""
        return self.state.last_switch_step > self.state.pool_step


def session_plan(
    n_users: int, users: np.ndarray, n_sessions: int, seed: int, mean_steps: float = 12.0
) -> list[tuple[int, int, int]]:
    """(user, session seed, steps) for n sessions of the given users; lengths as in the world."""
    rng = np.random.default_rng([seed, 11])
    chosen = rng.choice(users, size=n_sessions)
    lengths = np.clip(rng.geometric(1.0 / mean_steps, size=n_sessions), 2, 30)
    seeds = rng.integers(2**62, size=n_sessions)
    return [(int(u), int(s), int(n)) for u, s, n in zip(chosen, seeds, lengths, strict=True)]


def split_users(n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Training users (even ids) and held-out users (odd ids)."""
    ids = np.arange(n_users)
    return ids[ids % 2 == 0], ids[ids % 2 == 1]


class Rule(Protocol):
    """A request policy as the runner drives it: told each session, asked at each decision step."""

    def start_session(self, index: int, dev: DeviceSession, n_steps: int) -> None: ...

    def decide(self, u: float, forced: bool) -> bool: ...


@dataclass(frozen=True)
class RunResult:
    """A plan run by one rule: rates per decision step, rewards per session."""

    rate: float  # requests / decision steps (a session's first step is not a decision)
    refills: float  # forced refills / decision steps (counted in `rate`)
    expected_reward: float  # E[clicks + 3 × purchases] of the pages shown (less noisy)
    reward: float
    clicks: float
    purchases: float


def run_plan(
    world: World, cloud: ReferenceCloud, plan: list[tuple[int, int, int]], rule: Rule
) -> RunResult:
    """Every session of the plan, in order, decided by `rule`; the same draws for every rule.

    The device mechanics are the agent's: the first step fetches the initial list, a pool that
    cannot fill the page is refilled (forced, a counted request), and the rule decides the rest.
    """
    requests = decisions = refills = 0
    expected = clicks = buys = 0.0
    for index, (user, seed, n_steps) in enumerate(plan):
        dev = DeviceSession.start(world, cloud, user, seed)
        rng = np.random.default_rng([seed, 3])  # tie-breaks and coins: common random numbers
        rule.start_session(index, dev, n_steps)
        for t in range(n_steps):
            u = float(rng.random())
            ask = False
            if t > 0:
                forced = refill_forced(world, dev.state)
                ask = rule.decide(u, forced)
                requests, decisions, refills = requests + ask, decisions + 1, refills + forced
            out = dev.step(ask)
            expected += out.expected_reward
            clicks += float(out.clicks.sum())
            buys += float(out.purchases.sum())
    n, d = len(plan), max(decisions, 1)
    reward = (clicks + world.cfg.purchase_reward * buys) / n
    return RunResult(requests / d, refills / d, expected / n, reward, clicks / n, buys / n)
