"""Exploration logs with randomised refreshes, features, realised labels and true rollout uplift."""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import Pool

import numpy as np

from device_agent.policy.features import request_features
from simulator.session import true_uplift
from training.policy.device import DeviceSession, bench_world


@dataclass(frozen=True)
class UpliftLog:
    """One row per decision step (every step but a session's first)."""

    x: np.ndarray  # (n, d) device features
    w: np.ndarray  # (n,) refreshed (randomised with prob p)
    y: np.ndarray  # (n,) realised reward over the next H steps
    tau: np.ndarray  # (n,) true uplift by rollouts (NaN when not computed)
    switched: np.ndarray  # (n,) ground truth: intent switched since the pool was built
    cosine: np.ndarray  # (n,) baseline drift score
    ph: np.ndarray  # (n,) Page–Hinkley statistic on clicks since the refresh
    session: np.ndarray  # (n,)
    p: np.ndarray  # (n,) known refresh probability of the row's session (propensity)

    @staticmethod
    def concat(parts: list[UpliftLog]) -> UpliftLog:
        names = UpliftLog.__dataclass_fields__
        return UpliftLog(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def explore_session(args: tuple) -> UpliftLog:
    world_seed, sid, user, seed, n_steps, p, horizon, n_rollouts = args
    world, cloud = _world(world_seed)
    dev = DeviceSession.start(world, cloud, user, seed)
    rng = np.random.default_rng([seed, 7])
    rows: dict[str, list] = {k: [] for k in ("x", "w", "tau", "switched", "cosine", "ph")}
    rewards = []
    for t in range(n_steps + horizon):
        refresh = t > 0 and bool(rng.random() < p)
        if 0 < t < n_steps:
            rows["x"].append(request_features(dev.view))
            rows["w"].append(refresh)
            rows["switched"].append(dev.switched_since_pool())
            rows["cosine"].append(dev.view.cosine_drift())
            rows["ph"].append(dev.view.page_hinkley())
            tau = np.nan
            if n_rollouts:
                tau = true_uplift(world, cloud, dev.state, horizon, n_rollouts, seed=seed + t)
            rows["tau"].append(tau)
        rewards.append(dev.step(refresh).reward)
    r = np.asarray(rewards)
    y = np.array([r[t : t + horizon].sum() for t in range(1, n_steps)])
    n = len(y)
    return UpliftLog(
        x=np.asarray(rows["x"], dtype=np.float32).reshape(n, -1), w=np.asarray(rows["w"]), y=y,
        tau=np.asarray(rows["tau"], dtype=np.float64), switched=np.asarray(rows["switched"]),
        cosine=np.asarray(rows["cosine"]), ph=np.asarray(rows["ph"]), session=np.full(n, sid),
        p=np.full(n, p),
    )  # fmt: skip


_WORLDS: dict[int, tuple] = {}


def _world(seed: int) -> tuple:
    if seed not in _WORLDS:
        _WORLDS[seed] = bench_world(seed)
    return _WORLDS[seed]


def collect(
    world_seed: int,
    plan: list[tuple[int, int, int]],
    refresh_prob: float | tuple[float, ...] = 0.3,
    horizon: int = 3,
    n_rollouts: int = 8,
    workers: int = 2,
) -> UpliftLog:
    """Run the plan's sessions with refreshes randomised at refresh_prob, on `workers` processes.

    A tuple of probabilities is cycled over sessions (a known per-session propensity), so the
    logs also hold states that only rare refreshes reach, such as an exhausted pool.
    """
    probs = refresh_prob if isinstance(refresh_prob, tuple) else (refresh_prob,)
    jobs = [
        (world_seed, sid, u, s, n, probs[sid % len(probs)], horizon, n_rollouts)
        for sid, (u, s, n) in enumerate(plan)
    ]
    with Pool(workers) as pool:
        parts = pool.map(explore_session, jobs, chunksize=16)
    return UpliftLog.concat(parts)
