"""The judging reference: ask the cloud where the world's true uplift, by paired rollouts, is high.

A one-step lookahead rollout policy on the base policy "keep the list, refill when it runs out"
(Bertsekas, Tsitsiklis & Wu, "Rollout algorithms for combinatorial optimization", J. Heuristics
1997): at each step it compares, by paired rollouts to the end of the session, asking now and
keeping, and asks when the reward gained beats the price λ of the requests it costs. Greedy: it
is not the dynamic optimum (later asks are not planned), so another policy may beat it, and the
comparison checks for that. It needs the true state, so it is a judge, never a policy to ship.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from device_agent.policy.pacing import Allowance
from simulator.cloud import ReferenceCloud
from simulator.session import SessionState, feed_step
from simulator.world import World
from training.policy.device import DeviceSession, refill_forced

LABEL = "Oracle (true uplift)"
N_ROLLOUTS = 8
# A request's effect ends with the session (each session starts from the user's long-term
# interest), so the rollouts run to its end: up to 29 steps, 2.4 pool lives of 12 pages.
HORIZON = "rest of the session"
# States of exactly equal uplift (a refresh that brings back the same list: uplift 0, a fifth
# of the states) are split by the step's uniform draw, so the rate moves continuously with λ;
# well below the rollouts' noise (~1 reward unit), so it barely reorders states that differ.
TIE_BREAK = 0.1


@dataclass(frozen=True)
class Uplift:
    """Asking now minus keeping, both continued by "keep, refill when the pool runs out"."""

    reward: float  # expected reward (clicks + 3 × purchases) to the end of the horizon
    requests: float  # requests sent: 1 (this one) + the change in forced refills it causes


def fork(state: SessionState, rng: np.random.Generator) -> SessionState:
    """A copy of the state for one rollout, with its own draws: what `SessionState.copy()`
    gives, without deep-copying the feedback events (frozen) or the pool (never written in
    place, only replaced); that copy was half of the oracle's time."""
    return replace(
        state, interest=state.interest.copy(), rng=rng, shown=set(state.shown),
        feedback=list(state.feedback),
    )  # fmt: skip


def continue_session(
    world: World, cloud: ReferenceCloud, state: SessionState, ask: bool, horizon: int
) -> tuple[float, int]:
    """Expected reward and requests of `horizon` steps: ask (or not) now, then keep + refill."""
    reward, requests = 0.0, int(ask)
    for h in range(horizon):
        forced = h > 0 and refill_forced(world, state)
        out = feed_step(world, cloud, state, refresh=(ask and h == 0) or forced)
        reward += out.expected_reward
        requests += int(forced)
    return reward, requests


def paired_uplift(
    world: World,
    cloud: ReferenceCloud,
    state: SessionState,
    horizon: int,
    n_rollouts: int = N_ROLLOUTS,
    seed: int = 0,
) -> Uplift:
    """`simulator.session.true_uplift`'s paired rollouts (same seeds), with the agent's refills.

    `true_uplift` keeps the list to the end of its horizon and shows empty pages once the pool
    is exhausted, which the agent never does; over a horizon longer than the pool's life that
    overstates the value of asking. Without a refill inside the horizon both give the same number.
    """
    gains = np.empty((n_rollouts, 2))
    for r in range(n_rollouts):
        branch_seed = np.random.SeedSequence([seed, r])
        results = []
        for ask in (True, False):
            branch = fork(state, np.random.default_rng(branch_seed))
            results.append(continue_session(world, cloud, branch, ask, horizon))
        (r_ask, q_ask), (r_keep, q_keep) = results
        gains[r] = r_ask - r_keep, q_ask - q_keep
    reward, requests = gains.mean(axis=0)
    return Uplift(float(reward), float(requests))


class UpliftCache:
    """Uplifts by (session, decisions so far): a state is fixed by its session and history.

    Every pass of the rate matching, both variants and every budget replay the same sessions
    with the same draws, so they share every state they reach with the same decisions.
    """

    def __init__(self, n_rollouts: int = N_ROLLOUTS) -> None:
        self.n_rollouts = n_rollouts
        self._uplift: dict[tuple[int, tuple[bool, ...]], Uplift] = {}
        self.computed = 0

    def get(self, key: tuple[int, tuple[bool, ...]], dev: DeviceSession, horizon: int) -> Uplift:
        hit = self._uplift.get(key)
        if hit is None:
            seed = int(np.random.SeedSequence([key[0], len(key[1])]).generate_state(1)[0])
            hit = paired_uplift(dev.world, dev.cloud, dev.state, horizon, self.n_rollouts, seed)
            self._uplift[key] = hit
            self.computed += 1
        return hit


class OracleRule:
    """Ask where uplift.reward − λ · uplift.requests > 0; optionally with a device's allowance.

    Fleet-wide (`allowance_budget` None): one price λ over the whole stream. Per device: the
    same price, and each session its own `Allowance` (the agent's token bucket), so the oracle
    runs under the constraint the agent's devices run under.
    """

    def __init__(
        self, cache: UpliftCache, lam: float, allowance_budget: float | None = None
    ) -> None:
        self.cache, self.lam, self.allowance_budget = cache, lam, allowance_budget
        self.allowance: Allowance | None = None

    def start_session(self, index: int, dev: DeviceSession, n_steps: int) -> None:
        self.index, self.dev, self.n_steps = index, dev, n_steps
        self.history: list[bool] = []
        if self.allowance_budget is not None:
            self.allowance = Allowance(self.allowance_budget)

    def decide(self, u: float, forced: bool) -> bool:
        ask = forced
        if not forced and (self.allowance is None or self.allowance.has_token()):
            key = (self.index, tuple(self.history))
            horizon = self.n_steps - self.dev.state.step
            up = self.cache.get(key, self.dev, horizon)
            ask = up.reward - self.lam * up.requests + TIE_BREAK * (u - 1.0) > 0.0
        if self.allowance is not None:
            self.allowance.step(ask)
        self.history.append(ask)
        return ask
