"""What a load-test app user does with a page: a world session with intent shifts, or a script."""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from protos.actions import NAMES, code_of
from simulator.scales import SCALES
from simulator.session import SessionState, maybe_switch, show_page, start_session
from simulator.world import World

Event = dict[str, Any]


class Feed(Protocol):
    """One device's app user: switches intent at a step's start, reacts to the page shown."""

    switches: int

    def begin_step(self) -> None: ...

    def react(self, items: list[dict[str, int]]) -> list[Event]: ...

    def new_session(self) -> None: ...


def _events(item_ids: list[int], actions: list[int]) -> list[Event]:
    ts = int(time.time() * 1000)
    return [
        {"item_id": int(i), "action": NAMES[a], "timestamp_ms": ts}
        for i, a in zip(item_ids, actions, strict=True)
    ]


def device_seed(device_id: str) -> int:
    """A stable seed per device id (crc32: the same device replays the same user)."""
    return zlib.crc32(device_id.encode())


class WorldFeed:
    """The world's user behind a device: the intent switches (hazard `switch_hazard`), clicks and
    purchases follow the world's ground truth for the items the agent showed."""

    def __init__(self, world: World, device_id: str) -> None:
        self.world = world
        self.rng = np.random.default_rng(device_seed(device_id))
        self.user = int(self.rng.integers(world.cfg.n_users))
        self.switches = 0
        self.state = self._start()

    def _start(self) -> SessionState:
        return start_session(self.world, self.user, int(self.rng.integers(2**62)))

    def begin_step(self) -> None:
        self.switches += int(maybe_switch(self.world, self.state))

    def react(self, items: list[dict[str, int]]) -> list[Event]:
        page = np.array([it["item_id"] for it in items], dtype=np.int64)
        if len(page) == 0 or page.max() >= self.world.cfg.n_items:
            return []  # an item outside this world (wrong scale): show nothing, click nothing
        clicks, buys, _ = show_page(self.world, self.state, page)
        self.state.step += 1
        actions = [int(code_of(c, b)) for c, b in zip(clicks, buys, strict=True)]
        return _events(page.tolist(), actions)

    def new_session(self) -> None:
        self.state = self._start()


@dataclass
class ScriptedFeed:
    """No world: the user clicks the items of its current category and switches category every
    `every` steps (a deterministic interest shift)."""

    n_categories: int
    every: int = 8
    category: int = 0
    step: int = 0
    switches: int = 0

    def begin_step(self) -> None:
        if self.step and self.step % self.every == 0:
            self.category = (self.category + 1) % self.n_categories
            self.switches += 1

    def react(self, items: list[dict[str, int]]) -> list[Event]:
        self.step += 1
        actions = [int(it["category_id"] == self.category) for it in items]
        return _events([it["item_id"] for it in items], actions)

    def new_session(self) -> None:
        self.category = (self.category + self.every) % self.n_categories


@lru_cache(maxsize=4)
def world_for(scale: str, seed: int) -> World:
    return World(replace(SCALES[scale], seed=seed))


def feed_for(device_id: str, env: Mapping[str, str] = os.environ) -> Feed:
    """TANDEM_WORLD_SCALE (+ TANDEM_WORLD_SEED) picks world sessions; "script" the scripted feed."""
    scale = env.get("TANDEM_WORLD_SCALE", "default")
    if scale == "script":
        categories = int(env.get("TANDEM_N_CATEGORIES", "48"))
        return ScriptedFeed(categories, category=device_seed(device_id) % categories)
    return WorldFeed(world_for(scale, int(env.get("TANDEM_WORLD_SEED", "0"))), device_id)
