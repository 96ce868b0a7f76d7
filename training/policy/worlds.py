"""The worlds the request policy is judged on: the default world, other seeds, other drift rates."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from simulator.cloud import ReferenceCloud
from simulator.world import World, WorldConfig

DEFAULT = WorldConfig()  # the world `make demo` serves (4,000 users, 100k items, 48 categories)

# name -> world; "default" first. Other seeds change catalogue, users and sessions; other drift
# rates change how fast a click moves long-term interest (slow 0.01, fast 0.08 vs 0.03).
WORLDS: dict[str, WorldConfig] = {
    "default": DEFAULT,
    "seed1": replace(DEFAULT, seed=1),
    "seed2": replace(DEFAULT, seed=2),
    "drift0.01": replace(DEFAULT, drift_rate=0.01),
    "drift0.08": replace(DEFAULT, drift_rate=0.08),
}


@lru_cache(maxsize=4)
def world_named(name: str) -> tuple[World, ReferenceCloud]:
    """The world and its reference cloud (built once per process)."""
    if name not in WORLDS:
        raise KeyError(f"unknown world {name!r}; known: {', '.join(WORLDS)}")
    world = World(WORLDS[name])
    return world, ReferenceCloud(world)
