"""Budget pacing of cloud requests: refresh when value > λ, λ tuned online by dual descent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DualPacer:
    """Primal–dual pacing of a request budget (share of feed steps that may ask the cloud).

    Dual (sub)gradient step on the Lagrangian of max Σ value·x s.t. mean(x) ≤ b:
    λ ← max(0, λ + η (x − b)); the reward-to-resource threshold of AdaRequest's dynamic
    request programming (Qian et al., "Intelligent Request Strategy Design in Recommender
    System", KDD 2022) is the same λ read as a price per request. Because Σ (x_t − b) =
    (λ_T − λ_0)/η whenever λ is not clipped, the realised rate tracks b within |Δλ|/(η T).
    A cloud 429 counts as a spent request and raises λ by `backoff` on top (back-off).
    With `burst` set, a per-device allowance (token bucket: b tokens per step, at most `burst`)
    caps the realised rate at b + burst/T; λ then prices the demand (value > λ), not the grants.
    """

    budget: float
    eta: float = 0.05
    lam: float = 0.0
    backoff: float = 0.5
    lam_max: float = 1e6
    burst: float | None = None
    tokens: float = 1.0
    steps: int = 0
    requests: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget <= 1.0:
            raise ValueError("budget must be a share of steps in [0, 1]")
        if self.eta <= 0 or self.lam < 0 or self.backoff < 0:
            raise ValueError("eta must be positive, lam and backoff non-negative")

    def wants(self, value: float) -> bool:
        """Is this step's value above the price of a request?"""
        return value > self.lam

    def decide(self, value: float) -> bool:
        """Ask the cloud at this step? (value above λ and, with an allowance, a token left)"""
        return self.wants(value) and (self.burst is None or self.tokens >= 1.0)

    def update(self, requested: bool, throttled: bool = False, wanted: bool | None = None) -> float:
        """Record the step's outcome (`wanted`: value > λ, default = requested); returns λ."""
        self.steps += 1
        self.requests += int(requested)
        if self.burst is not None:
            self.tokens = min(self.burst, self.tokens + self.budget) - float(requested)
        demand = requested if wanted is None else wanted
        step = self.eta * (float(demand) - self.budget)
        if throttled:
            step += self.backoff * self.eta
        self.lam = min(self.lam_max, max(0.0, self.lam + step))
        return self.lam

    @property
    def rate(self) -> float:
        return self.requests / self.steps if self.steps else 0.0


@dataclass
class Allowance:
    """A device's own request allowance: `budget` tokens per feed step, at most `burst` saved.

    The price λ is learned across the fleet (one DualPacer per agent, as AdaRequest deploys one
    threshold to all devices); this caps any single device at budget + burst / T requests.
    """

    budget: float
    burst: float = 2.0
    tokens: float = 1.0

    def has_token(self) -> bool:
        return self.tokens >= 1.0

    def step(self, requested: bool) -> None:
        self.tokens = min(self.burst, self.tokens + self.budget) - float(requested)
