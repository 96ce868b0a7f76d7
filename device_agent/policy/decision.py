"""The request decision of one feed step: paced value, the device's allowance, logged exploration.

ε-greedy with a known propensity (Li et al., "A contextual-bandit approach to personalized news
article recommendation", WWW 2010, and its offline-evaluation sequel, WSDM 2011): with probability
ε the decision is a coin with P(ask) = `ask_prob` instead of the greedy rule, so every state where
the device may ask has both actions with a positive, logged probability, and an uplift learner can
weight by it (IPW / doubly robust). An exploratory ask spends a token and counts in the pacer's
demand like any other: exploration is paid from the budget, not on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_agent.policy.pacing import Allowance, DualPacer


@dataclass(frozen=True)
class Exploration:
    """ε (share of decisions randomised) and P(ask) inside a randomised decision."""

    share: float = 0.0
    ask_prob: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise ValueError("exploration share must be in [0, 1)")
        if not 0.0 < self.ask_prob < 1.0:
            raise ValueError("exploration ask_prob must be in (0, 1)")

    def p_ask(self, greedy: bool) -> float:
        """P(ask) of a step whose greedy rule says `greedy` (when a token is available)."""
        return (1.0 - self.share) * float(greedy) + self.share * self.ask_prob


@dataclass(frozen=True)
class Choice:
    """One step's decision and what the logs need to learn from it."""

    ask: bool
    propensity: float  # P(the action taken | the device's state), in (0, 1]
    wanted: bool  # the paced rule alone (value > λ)
    forced: bool  # initial list or refill: not a policy decision (propensity 1)


class RequestPolicy:
    """The fleet-wide price λ (a DualPacer), exploration, and a device's own allowance.

    One per agent (the price is shared by the agent's devices); the allowance is per device.
    `decide` draws nothing but `u` (a uniform number the caller owns), so a replay with the
    same draws takes the same decisions.
    """

    def __init__(self, pacer: DualPacer, exploration: Exploration | None = None) -> None:
        self.pacer = pacer
        self.exploration = exploration or Exploration()

    def decide(self, value: float, allowance: Allowance, u: float, forced: bool = False) -> Choice:
        wanted = self.pacer.wants(value)
        if forced:
            return Choice(True, 1.0, wanted, True)
        if not allowance.has_token():  # no token: the device cannot ask, whatever the draw
            return Choice(False, 1.0, wanted, False)
        p = self.exploration.p_ask(wanted)
        ask = u < p
        return Choice(ask, p if ask else 1.0 - p, wanted, False)

    def record(self, choice: Choice, allowance: Allowance, throttled: bool = False) -> float:
        """Spend the token and move λ on the request sent (forced and exploratory asks included)."""
        allowance.step(choice.ask)
        return self.pacer.update(
            choice.ask, throttled=throttled, wanted=choice.wanted or choice.ask
        )
