"""Glue between a world session and the device's own view of it (only what a device observes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from device_agent.policy.features import SessionView
from simulator.cloud import ReferenceCloud
from simulator.session import SessionState, StepOutcome, feed_step, start_session
from simulator.world import World, WorldConfig

# World used by every policy benchmark: small enough for a few minutes on 2 cores.
BENCH_WORLD: dict[str, Any] = dict(n_users=1500, n_items=20_000, n_categories=32)


def bench_world(seed: int) -> tuple[World, ReferenceCloud]:
    world = World(WorldConfig(seed=seed, **BENCH_WORLD))
    return world, ReferenceCloud(world)


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
