"""A device's feed loop in the world with the cloud's real serving code, per Recommend mode.

Each mode asks the same `OnlineRecommender` (retrieval + the bundle's ONNX rankers) from what
that mode sends: `raw` the clicked ids (the default mode's event window), `private` the device
encoder's pseudo-history (ONNX Runtime, as on the device), `fallback` the clicked rows' mean row
(the private mode without an encoder), `popular` nothing. Sessions share their seeds across
modes; the world's expected reward of each page (clicks + 3 × purchases) judges them, and its
truth is read for nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloud_service.recommender.serving import OnlineRecommender
from device_agent.inference.interest_encoder import OnnxInterestEncoder, private_interest
from simulator.cloud import CLICK
from simulator.session import SessionState, maybe_switch, show_page, start_session
from simulator.world import World

MODES = ("raw", "private", "fallback", "popular")


@dataclass(frozen=True)
class LoopConfig:
    sessions: int = 400
    steps: int = 20  # feed steps per session
    refresh_every: int = 3  # the device asks for a fresh list this often (and when it runs low)
    history_len: int = 30  # clicks the cloud ranks with (the bundle's history length)
    seed: int = 0


class ModeCloud:
    """The cloud list a device in `mode` gets for a session state (ids it showed excluded)."""

    def __init__(
        self, recommender: OnlineRecommender, encoder: OnnxInterestEncoder, mode: str
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {MODES})")
        self.recommender, self.encoder, self.mode = recommender, encoder, mode
        self.rows = recommender.bundle.item_rows  # what the device received with each list

    def recommend(self, state: SessionState, k: int, history_len: int) -> np.ndarray:
        exclude = np.array(sorted(state.shown), dtype=np.int64)
        clicked = np.array([f.item for f in state.feedback if f.action >= CLICK], np.int64)
        clicked = clicked[-history_len:]
        rec = self.recommender
        if self.mode == "popular" or len(clicked) == 0:
            return rec.popular(exclude, k).item_ids
        if self.mode == "raw":
            return rec.recommend(clicked, exclude, None, k).item_ids
        encoder = self.encoder if self.mode == "private" else None
        p = private_interest(list(self.rows[clicked]), encoder, "")
        return rec.recommend_private(p.interest_set, p.weights, None, exclude, k).item_ids


def run_session(world: World, cloud: ModeCloud, user: int, seed: int, cfg: LoopConfig) -> float:
    """Total expected reward of one session served in the cloud's order."""
    state = start_session(world, user, seed)
    page_size, k = world.cfg.page_size, world.cfg.pool_size
    pool = np.empty(0, dtype=np.int64)
    total = 0.0
    for step in range(cfg.steps):
        maybe_switch(world, state)
        if step % cfg.refresh_every == 0 or len(pool) < page_size:
            pool = cloud.recommend(state, k, cfg.history_len)
        page, pool = pool[:page_size], pool[page_size:]
        _, _, expected = show_page(world, state, page)
        total += expected
        state.step += 1
    return total


def reward_per_step(world: World, cloud: ModeCloud, cfg: LoopConfig) -> np.ndarray:
    """Expected reward per step of each session (same users and seeds for every mode)."""
    rng = np.random.default_rng([cfg.seed, 11])
    users = rng.integers(world.cfg.n_users, size=cfg.sessions)
    seeds = rng.integers(2**62, size=cfg.sessions)
    return np.array([
        run_session(world, cloud, int(u), int(s), cfg) / cfg.steps
        for u, s in zip(users, seeds, strict=True)
    ])  # fmt: skip
