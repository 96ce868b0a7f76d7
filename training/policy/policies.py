"""Request policies on the device's view: baseline scores with a threshold, and the agent's rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from device_agent.policy.decision import Exploration, RequestPolicy
from device_agent.policy.features import SessionView, request_features
from device_agent.policy.pacing import Allowance, DualPacer
from device_agent.policy.value import RequestValueModel
from device_agent.settings import PacingSettings
from training.policy.device import DeviceSession

Score = Callable[[SessionView, float], float]  # (view, uniform tie-break u in [0, 1)) -> score


def rand_q(view: SessionView, u: float) -> float:
    return u


def static_q(view: SessionView, u: float) -> float:
    """Every n steps; u interpolates between n and n + 1 to hit any rate."""
    return view.steps_since_refresh + u


def pool_q(view: SessionView, u: float) -> float:
    """When the pool runs low."""
    return -len(view.pool_cats) + u


def edgerec_q(view: SessionView, u: float) -> float:
    """EdgeRec triggers (Gong et al., "EdgeRec: recommender system on edge in Mobile Taobao",
    CIKM 2020): after a click (score 100) or after k exposures without a click."""
    last = list(view.recent)[-view.page_size :]
    clicked = any(k for _, k in last) and view.steps_since_refresh > 0
    return (100.0 if clicked else float(view.skip_streak)) + u


def shift_q(view: SessionView, u: float) -> float:
    return view.shift() + 1e-6 * u


def value_score(model: RequestValueModel) -> Score:
    def score(view: SessionView, u: float) -> float:
        return model.value(request_features(view)) + 1e-6 * u

    return score


# (score, search range of θ) per tuned baseline
BASELINES: dict[str, tuple[Score, tuple[float, float]]] = {
    "RandQ": (rand_q, (0.0, 1.0)),
    "StaticQ": (static_q, (0.0, 32.0)),
    "PoolQ": (pool_q, (-200.0, 1.0)),
    "EdgeRecQ": (edgerec_q, (0.0, 102.0)),
    "ShiftQ": (shift_q, (0.0, 1.0)),
}


class ThresholdRule:
    """Ask when score > θ (score None: never, the agent's "never" policy); refills are forced."""

    def __init__(self, score: Score | None, theta: float) -> None:
        self.score, self.theta = score, theta

    def start_session(self, index: int, dev: DeviceSession, n_steps: int) -> None:
        self.view = dev.view

    def decide(self, u: float, forced: bool) -> bool:
        return forced or (self.score is not None and self.score(self.view, u) > self.theta)


@dataclass(frozen=True)
class AgentPacing:
    """The agent's default pacing and exploration (`device_agent.settings.PacingSettings`)."""

    eta: float
    burst: float
    backoff: float
    exploration: Exploration

    @staticmethod
    def defaults() -> AgentPacing:
        fields = PacingSettings.model_fields

        def default(name: str, fallback: float) -> float:
            field = fields.get(name)
            return float(field.default) if field is not None else fallback

        explore = Exploration(default("exploration", 0.05), default("exploration_ask_prob", 0.5))
        return AgentPacing(
            default("pacer_eta", 0.05), default("pacer_burst", 2.0),
            default("pacer_backoff", 0.5), explore,
        )  # fmt: skip


class PacedRule:
    """The agent's decision: a `RequestPolicy` (one DualPacer over the whole stream, the
    agent's exploration) on the ONNX value, and each session its own `Allowance`."""

    def __init__(
        self, model: RequestValueModel, budget: float, lam0: float, pacing: AgentPacing
    ) -> None:
        self.model, self.budget, self.burst = model, budget, pacing.burst
        pacer = DualPacer(budget, eta=pacing.eta, lam=lam0, backoff=pacing.backoff)
        self.policy = RequestPolicy(pacer, pacing.exploration)

    def start_session(self, index: int, dev: DeviceSession, n_steps: int) -> None:
        self.view = dev.view
        self.allowance = Allowance(self.budget, burst=self.burst)

    def decide(self, u: float, forced: bool) -> bool:
        value = self.model.value(request_features(self.view))
        choice = self.policy.decide(value, self.allowance, u, forced)
        self.policy.record(choice, self.allowance)
        return choice.ask
