"""Logged traffic of the world: impressions and steps with randomised refreshes, and exports."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from tqdm import tqdm

from simulator.cloud import ReferenceCloud
from simulator.session import feed_step, start_session
from simulator.world import World

STEP_SECONDS = 15  # simulated seconds between two feed steps


@dataclass(frozen=True)
class Impressions:
    """One row per item shown: the exposure log every model trains on."""

    session: np.ndarray
    user: np.ndarray
    step: np.ndarray
    position: np.ndarray
    item: np.ndarray
    category: np.ndarray
    click: np.ndarray
    purchase: np.ndarray
    timestamp: np.ndarray
    intent: np.ndarray  # ground truth, for evaluation only

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def select(self, mask: np.ndarray) -> Impressions:
        return Impressions(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Impressions]) -> Impressions:
        names = [f.name for f in fields(Impressions)]
        return Impressions(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


@dataclass(frozen=True)
class Steps:
    """One row per feed step: the decision log (was the pool refreshed, did the intent switch)."""

    session: np.ndarray
    user: np.ndarray
    step: np.ndarray
    timestamp: np.ndarray
    refreshed: np.ndarray
    switched: np.ndarray
    intent: np.ndarray
    pool_intent: np.ndarray
    reward: np.ndarray
    expected_reward: np.ndarray

    def __len__(self) -> int:
        return int(self.step.shape[0])


@dataclass(frozen=True)
class Traffic:
    impressions: Impressions
    steps: Steps


def session_schedule(world: World, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(start time, user, number of steps) of every session, in time order."""
    cfg = world.cfg
    span = cfg.days * 86_400
    plan = []
    for user in range(cfg.n_users):
        n_sessions = 1 + int(rng.poisson(cfg.sessions_per_user - 1))
        for start in rng.integers(0, span, size=n_sessions):
            steps = int(rng.geometric(1.0 / cfg.mean_session_steps))
            plan.append((int(start), user, int(np.clip(steps, 2, cfg.max_session_steps))))
    plan.sort()
    return plan


def generate_traffic(
    world: World,
    cloud: ReferenceCloud,
    refresh_prob: float = 0.3,
    seed: int = 0,
    max_sessions: int | None = None,
    progress: bool = False,
) -> Traffic:
    """Run every scheduled session with refreshes randomised at `refresh_prob` per step.

    Randomised refreshes make the log usable for uplift estimation (the treatment is
    independent of the state). The first step of a session always asks the cloud.
    """
    rng = np.random.default_rng([seed, 1])
    plan = session_schedule(world, rng)[:max_sessions]
    imp: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(Impressions)}
    st: dict[str, list[float | int | bool]] = {f.name: [] for f in fields(Steps)}
    for sid, (start, user, n_steps) in enumerate(tqdm(plan, disable=not progress, desc="sessions")):
        state = start_session(world, user, seed=int(rng.integers(2**63)))
        for _ in range(n_steps):
            refresh = bool(rng.random() < refresh_prob)
            out = feed_step(world, cloud, state, refresh)
            ts = start + out.step * STEP_SECONDS
            n = len(out.page)
            for name, value in (
                ("session", sid), ("user", user), ("step", out.step), ("timestamp", ts),
                ("intent", out.intent),
            ):  # fmt: skip
                imp[name].append(np.full(n, value, dtype=np.int64))
            imp["position"].append(np.arange(n, dtype=np.int64))
            imp["item"].append(out.page.astype(np.int64))
            imp["category"].append(world.catalog.category[out.page])
            imp["click"].append(out.clicks)
            imp["purchase"].append(out.purchases)
            row = (sid, user, out.step, ts, out.refreshed, out.switched, out.intent,
                   out.pool_intent, out.reward, out.expected_reward)  # fmt: skip
            for f, value in zip(fields(Steps), row, strict=True):
                st[f.name].append(value)
    impressions = Impressions(**{k: np.concatenate(v) for k, v in imp.items()})
    steps = Steps(**{k: np.asarray(v) for k, v in st.items()})
    return Traffic(impressions, steps)
