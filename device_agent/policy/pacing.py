"""Budget pacing of cloud requests: refresh when value > λ, λ tuned online by dual descent."""

from __future__ import annotations

from dataclasses import dataclass

# Floor of the price, in value units: low enough that a device also asks at its best steps
# valued ≤ 0 when the budget is not spent otherwise (a 20 % budget spent 15–19 % with λ ≥ 0),
# high enough to stop λ winding down without end while the budget cannot be spent (every
# allowance empty, the cloud away); measured by `python -m training.policy.pacing_hour`.
LAM_MIN = -1.0


@dataclass
class DualPacer:
    """Primal–dual pacing of a request budget (share of feed steps that may ask the cloud).

    Dual (sub)gradient step on the Lagrangian of max Σ value·x s.t. mean(x) ≤ b:
    λ ← clip(λ + η (x − b), lam_min, lam_max), x = a request sent at this step (refills,
    exploration and refused requests included); the reward-to-resource threshold of
    AdaRequest's dynamic request programming (Qian et al., "Intelligent Request Strategy Design
    in Recommender System", KDD 2022) is the same λ read as a price per request. Because
    Σ (x_t − b) = (λ_T − λ_0)/η whenever λ is not clipped, the realised rate tracks b within
    |Δλ|/(ηT). λ may go below 0: the value model's zero is an estimate, and a budget the
    positive values cannot fill is spent on the best of the rest (down to `lam_min`).

    A cloud 429 adds `backoff`·η to λ as a surcharge that decays by `backoff_decay` per
    step: a burst of refusals backs the devices off at once, and since the dual step moves
    only the price under it (`price` = λ − surcharge) the long-run rate still meets the budget.

    `price_demand` prices the demand instead (x = wanted: value above the price, whether or not
    the device's allowance let it ask); the rate then falls short of b by the asks the
    allowances refused. Kept to measure that choice against the default.
    """

    budget: float
    eta: float = 0.05
    lam: float = 0.0
    backoff: float = 0.5
    backoff_decay: float = 0.8
    lam_min: float = LAM_MIN
    lam_max: float = 1e6
    price_demand: bool = False
    surcharge: float = 0.0
    steps: int = 0
    requests: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.budget <= 1.0:
            raise ValueError("budget must be a share of steps in [0, 1]")
        if self.eta <= 0 or self.backoff < 0 or not 0.0 <= self.backoff_decay < 1.0:
            raise ValueError("eta must be positive, backoff ≥ 0, backoff_decay in [0, 1)")
        if self.lam < self.lam_min:
            raise ValueError("the initial λ must not be below lam_min")

    @property
    def price(self) -> float:
        """λ without what recent 429s added: the dual variable of the budget."""
        return self.lam - self.surcharge

    def wants(self, value: float) -> bool:
        """Is this step's value above the price of a request?"""
        return value > self.lam

    def decide(self, value: float) -> bool:
        """Ask the cloud at this step? (without an allowance: value above the price)"""
        return self.wants(value)

    def update(self, requested: bool, throttled: bool = False, wanted: bool | None = None) -> float:
        """Record the step: `requested` = a request was sent; returns λ."""
        self.steps += 1
        self.requests += int(requested)
        x = wanted if self.price_demand and wanted is not None else requested
        price = self.price + self.eta * (float(x) - self.budget)
        self.surcharge *= self.backoff_decay
        if throttled:
            self.surcharge += self.backoff * self.eta
        self.lam = min(self.lam_max, max(self.lam_min, price)) + self.surcharge
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
