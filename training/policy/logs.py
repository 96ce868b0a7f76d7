"""Fleet logs of request decisions: features, action, its propensity, the reward that followed.

What a deployment logs (the events pipeline's decision fields), simulated: the fleet runs a
logging policy — an exploration bucket that refreshes at a known probability, or the agent's own
paced rule with ε-greedy exploration (`device_agent.policy.decision`) — and every step records
the features it decided on, whether it asked, P(ask) and the realised reward of the next H steps.
The world's truth (rollout uplift, true switches) is filled only for evaluation logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing import Pool

import numpy as np

from device_agent.policy.decision import Exploration, RequestPolicy
from device_agent.policy.features import request_features
from device_agent.policy.pacing import Allowance, DualPacer
from device_agent.policy.value import RequestValueModel
from simulator.session import true_uplift
from training.policy.device import DeviceSession
from training.policy.worlds import world_named


@dataclass(frozen=True)
class UpliftLog:
    """One row per decision step (every step but a session's first)."""

    x: np.ndarray  # (n, d) device features
    w: np.ndarray  # (n,) asked the cloud
    y: np.ndarray  # (n,) realised reward over the next H steps (clicks + 3 × purchases)
    tau: np.ndarray  # (n,) true uplift by rollouts — evaluation only (NaN when not computed)
    switched: np.ndarray  # (n,) truth: intent switched since the pool was built — evaluation only
    cosine: np.ndarray  # (n,) baseline drift score
    ph: np.ndarray  # (n,) Page–Hinkley statistic on clicks since the refresh
    session: np.ndarray  # (n,)
    p: np.ndarray  # (n,) logged P(ask) of the step (0 or 1: the step was not randomised)
    reward: np.ndarray  # (n,) realised reward of the step itself
    expected: np.ndarray  # (n,) the world's expected reward of the step — evaluation only
    user: np.ndarray  # (n,) the session's user

    @staticmethod
    def concat(parts: list[UpliftLog]) -> UpliftLog:
        names = UpliftLog.__dataclass_fields__
        return UpliftLog(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})

    def select(self, mask: np.ndarray) -> UpliftLog:
        return UpliftLog(**{n: getattr(self, n)[mask] for n in UpliftLog.__dataclass_fields__})

    @property
    def explored(self) -> np.ndarray:
        """Rows where both actions had a positive probability (the learners' rows)."""
        return (self.p > 0.0) & (self.p < 1.0)


@dataclass(frozen=True)
class LoggingPolicy:
    """How the fleet decided while it logged.

    kind "random": refresh at a known probability, cycled over sessions (an exploration bucket);
    kind "shift" / "value": the agent's rule on the shift score or a value model — one price λ
    per worker process shared by the sessions it runs, as one agent shares it by its devices
    (starting at `threshold`), each session's own allowance, ε-greedy exploration.
    """

    kind: str = "random"
    refresh_prob: tuple[float, ...] = (0.3, 0.08)
    budget: float = 0.10
    threshold: float = 0.5
    eta: float = 0.05
    exploration: float = 0.10
    ask_prob: float = 0.5
    model: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Job:
    world: str
    sid: int
    user: int
    seed: int
    n_steps: int
    policy: LoggingPolicy
    horizon: int  # of the realised label y
    truth_horizon: int  # of the rollout uplift (evaluation)
    n_rollouts: int  # 0 = no truth


_MODELS: dict[int, RequestValueModel] = {}
_FLEET: dict[LoggingPolicy, RequestPolicy] = {}  # this process's price per logging policy


def fleet_policy(pol: LoggingPolicy) -> RequestPolicy:
    if pol not in _FLEET:
        _FLEET[pol] = RequestPolicy(
            DualPacer(pol.budget, eta=pol.eta, lam=pol.threshold),
            Exploration(pol.exploration, pol.ask_prob),
        )
    return _FLEET[pol]


def _scorer(policy: LoggingPolicy):  # type: ignore[no-untyped-def]
    if policy.kind == "shift":
        return lambda view: view.shift()
    if policy.kind == "value":
        assert policy.model is not None
        key = hash(policy.model)
        if key not in _MODELS:
            _MODELS[key] = RequestValueModel(policy.model)
        model = _MODELS[key]
        return lambda view: model.value(request_features(view))
    raise ValueError(f"unknown logging policy {policy.kind!r}")


def explore_session(job: Job) -> UpliftLog:
    world, cloud = world_named(job.world)
    pol = job.policy
    dev = DeviceSession.start(world, cloud, job.user, job.seed)
    rng = np.random.default_rng([job.seed, 7])
    if pol.kind == "random":
        p_fixed = pol.refresh_prob[job.sid % len(pol.refresh_prob)]
    else:
        score = _scorer(pol)
        rule = fleet_policy(pol)
        allowance = Allowance(pol.budget)
    rows: dict[str, list] = {k: [] for k in ("x", "w", "p", "tau", "switched", "cosine", "ph")}
    rewards, expected = [], []
    for t in range(job.n_steps + job.horizon):
        u = float(rng.random())
        refresh, p_ask = False, 0.0
        if t > 0 and pol.kind == "random":
            p_ask = p_fixed
            refresh = u < p_ask
        elif t > 0:
            choice = rule.decide(score(dev.view), allowance, u)
            refresh = choice.ask
            p_ask = choice.propensity if choice.ask else 1.0 - choice.propensity
            rule.record(choice, allowance)
        if 0 < t < job.n_steps:
            rows["x"].append(request_features(dev.view))
            rows["w"].append(refresh)
            rows["p"].append(p_ask)
            rows["switched"].append(dev.switched_since_pool())
            rows["cosine"].append(dev.view.cosine_drift())
            rows["ph"].append(dev.view.page_hinkley())
            tau = np.nan
            if job.n_rollouts:
                tau = true_uplift(
                    world, cloud, dev.state, job.truth_horizon, job.n_rollouts, seed=job.seed + t
                )
            rows["tau"].append(tau)
        outcome = dev.step(refresh)
        rewards.append(outcome.reward)
        expected.append(outcome.expected_reward)
    r = np.asarray(rewards)
    y = np.array([r[t : t + job.horizon].sum() for t in range(1, job.n_steps)])
    n = len(y)
    return UpliftLog(
        x=np.asarray(rows["x"], dtype=np.float32).reshape(n, -1), w=np.asarray(rows["w"]), y=y,
        tau=np.asarray(rows["tau"], dtype=np.float64), switched=np.asarray(rows["switched"]),
        cosine=np.asarray(rows["cosine"]), ph=np.asarray(rows["ph"]),
        session=np.full(n, job.sid), p=np.asarray(rows["p"], dtype=np.float64),
        reward=r[1 : job.n_steps], expected=np.asarray(expected)[1 : job.n_steps],
        user=np.full(n, job.user),
    )  # fmt: skip


def collect(
    world: str,
    plan: list[tuple[int, int, int]],
    policy: LoggingPolicy | None = None,
    horizon: int = 3,
    n_rollouts: int = 0,
    truth_horizon: int = 8,
    workers: int = 2,
) -> UpliftLog:
    """Run the plan's sessions under the logging policy on `workers` processes.

    With n_rollouts > 0 every row also gets the world's true uplift over `truth_horizon` steps
    (evaluation logs only: a deployment has no rollouts).
    """
    pol = policy or LoggingPolicy()
    jobs = [
        Job(world, sid, u, s, n, pol, horizon, truth_horizon, n_rollouts)
        for sid, (u, s, n) in enumerate(plan)
    ]
    if workers <= 1:
        return UpliftLog.concat([explore_session(j) for j in jobs])
    with Pool(workers) as pool:
        parts = pool.map(explore_session, jobs, chunksize=16)
    return UpliftLog.concat(parts)
