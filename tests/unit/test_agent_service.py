"""The agent's domain with a fake cloud: first list, fallback, pacing, re-rank, atomic events."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.build import build_pacer, build_session_factory, request_size
from device_agent.inference.models import RerankerSlot, ValueModelSlot
from device_agent.policy.decision import Exploration
from device_agent.policy.features import FEATURES
from device_agent.ports import CloudError, CloudList
from device_agent.service import AgentService, AppEvent, InvalidEvent
from device_agent.session.registry import SessionRegistry
from device_agent.settings import DeviceSettings, FeedSettings, PacingSettings
from tandem_core.release import resolve
from training.tiny import ArtifactDirs

pytestmark = pytest.mark.unit
DIM = 40


class FakeCloud:
    """Answers with the next `k` ids of a fixed catalogue, or raises the error it is told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: CloudError | None = None
        self.next_id = 0

    def recommend(self, device_id: str, k: int, recent: list, exclude: list[int]) -> CloudList:
        self.calls += 1
        if self.error is not None:
            raise self.error
        ids = np.arange(self.next_id, self.next_id + k)
        self.next_id += k
        rng = np.random.default_rng(self.next_id)
        return CloudList(
            ids, ids % 5, np.linspace(0.9, 0.1, k, dtype=np.float32),
            rng.normal(size=(k, DIM)).astype(np.float32), "din-x", "emb-x", "rid",
        )  # fmt: skip


class FixedValue:
    """A value model that always values a request at `value`."""

    def __init__(self, value: float) -> None:
        self.v = value

    def value(self, features: np.ndarray) -> float:
        return self.v


def service(
    cloud: FakeCloud,
    reranker: RerankerSlot | None = None,
    value: float | None = None,
    **pacing: float,
) -> AgentService:
    settings = DeviceSettings(feed=FeedSettings(pool_size=12), pacing=PacingSettings(**pacing))
    registry = SessionRegistry(build_session_factory(settings), max_devices=3)
    model = None if value is None else ValueModelSlot(model=FixedValue(value))
    pacer = build_pacer(settings.pacing)
    return AgentService(registry, cloud, reranker or RerankerSlot(), model, 12, 50, "value", pacer)  # type: ignore[arg-type]


def test_first_page_comes_from_the_cloud_then_from_the_pool() -> None:
    cloud = FakeCloud()
    agent = service(cloud, request_budget=0.0, initial_threshold=1e9)
    first = agent.recommend("d", 4)
    assert first.source == "cloud" and first.decision.outcome == "initial"
    rest = [agent.recommend("d", 4) for _ in range(2)]
    assert all(p.source == "local" for p in rest) and cloud.calls == 1
    served = np.concatenate([p.items.items for p in [first, *rest]])
    assert sorted(served.tolist()) == list(range(12))  # the whole pool, each item once


def test_a_failing_cloud_degrades_to_the_pool_or_to_another_devices_list() -> None:
    cloud = FakeCloud()
    agent = service(cloud, request_budget=1.0, pacer_burst=50.0)
    agent.recommend("a", 4)
    cloud.error = CloudError("timeout", "slow")
    page = agent.recommend("b", 4)  # a new device while the cloud is down
    assert page.source == "local" and page.decision.outcome == "timeout"
    assert len(page.items) == 4  # items from the agent's latest cloud list


def test_throttling_backs_off_the_pacer() -> None:
    cloud = FakeCloud()
    agent = service(cloud, value=5.0, request_budget=1.0, pacer_burst=50.0, pacer_backoff=2.0)
    agent.recommend("a", 1)
    asked = agent.recommend("a", 1)
    assert asked.decision.asked and asked.decision.outcome == "refreshed"
    cloud.error = CloudError("throttled", "429", retry_after_s=1.0)
    throttled = agent.recommend("a", 1)
    assert throttled.decision.outcome == "throttled" and throttled.source == "local"
    # at a full budget demand moves λ by η(1 − b) = 0; the 429 adds the back-off η·2
    step = throttled.decision.threshold - asked.decision.threshold
    assert step == pytest.approx(0.05 * 2.0)


def test_events_are_all_or_nothing() -> None:
    agent = service(FakeCloud())
    agent.recommend("a", 2)
    with pytest.raises(InvalidEvent):
        agent.record_events("a", [AppEvent(1, 1, 5), AppEvent(2, 7, 5)])
    assert len(agent.sessions.get("a").behavior) == 0


def test_device_model_reorders_the_pool_after_events(tiny_artifacts: ArtifactDirs) -> None:
    import json

    version_dir = resolve(tiny_artifacts.device)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    slot = RerankerSlot()
    data = (version_dir / manifest["file"]).read_bytes()
    assert slot.install(data, manifest["sha256"][manifest["file"]], manifest["version"])
    assert not slot.install(data, "0" * 64, "tampered") and slot.version == manifest["version"]
    agent = service(FakeCloud(), slot, request_budget=0.0, initial_threshold=1e9)
    agent.recommend("a", 1)
    session = agent.sessions.get("a")
    cloud_order = np.arange(len(session.pool))
    agent.record_events("a", [AppEvent(0, 1, 1), AppEvent(0, 2, 2)])
    reranked = session.order.copy()
    assert sorted(reranked.tolist()) == cloud_order.tolist()  # a permutation of the pool
    assert len(session.behavior) == 2


def test_sessions_are_evicted_least_recent_first() -> None:
    agent = service(FakeCloud())
    for device in ("a", "b", "c", "d"):
        agent.recommend(device, 1)
    devices = [s.device_id for s in agent.sessions.snapshot()]
    assert devices == ["b", "c", "d"]


@pytest.mark.parametrize(
    ("budget", "page", "pool", "expected"),
    [
        (0.05, 4, 48, 120),
        (0.10, 4, 48, 60),
        (0.30, 4, 48, 48),
        (0.0, 4, 48, 48),
        (0.01, 4, 48, 200),
    ],
)
def test_the_pool_is_large_enough_for_refills_to_fit_the_budget(
    budget: float, page: int, pool: int, expected: int
) -> None:
    feed = FeedSettings(page_size=page, pool_size=pool)
    # refills cost page / size ≤ budget / 1.5 unless capped
    assert request_size(feed, PacingSettings(request_budget=budget)) == expected


def test_explored_decisions_log_their_propensity_and_features() -> None:
    """With exploration on, pages carry P(decision taken) < 1 and the features decided on; with
    it off (and without a budget to spend) every decision is logged with probability 1."""
    cloud = FakeCloud()
    settings = DeviceSettings(feed=FeedSettings(pool_size=200), pacing=PacingSettings(
        request_budget=1.0, pacer_burst=50.0, initial_threshold=1e9))  # fmt: skip
    registry = SessionRegistry(build_session_factory(settings), max_devices=3)
    agent = AgentService(
        registry, cloud, RerankerSlot(), ValueModelSlot(model=FixedValue(0.0)), 200, 50,  # type: ignore[arg-type]
        "value", build_pacer(settings.pacing), exploration=Exploration(0.4, 0.5), seed=0,
    )  # fmt: skip
    pages = [agent.recommend("d", 4) for _ in range(60)]
    decisions = [p.decision for p in pages[1:]]  # the first list is forced (initial)
    assert {round(d.propensity, 6) for d in decisions} == {0.2, 0.8}
    asked = [d.asked for d in decisions]
    assert 0 < sum(asked) < len(asked)  # λ = 1e9: every ask is exploratory
    assert all(len(d.features) == len(FEATURES) for d in decisions)
    logged = agent.sessions.get("d").page_decision
    assert logged is not None and logged.step == 60
    assert round(logged.propensity, 6) in (0.2, 0.8)


def test_a_new_value_model_prices_requests_from_the_start_again() -> None:
    """λ is in the units of the model that learned it: a hot swap resets it to the initial price."""
    agent = service(FakeCloud(), value=5.0, request_budget=0.5, pacer_eta=1.0)
    agent.recommend("d", 4)
    agent.pacer.lam = learned = 3.0  # as learned for the shift score's units
    agent.recommend("d", 4)
    assert agent.pacer.lam >= learned - 1.0  # the same model: λ only takes its dual step
    agent.pacer.lam = learned
    assert agent.value_model is not None
    agent.value_model.current_version = "value-2"  # what a hot swap sets beside `current`
    agent.recommend("d", 4)
    assert agent.pacer.lam <= 1.0 < learned  # back at 0, then one dual step of η (1 − b)


class BrokenModel:
    """A model that installed but cannot run (a graph that fails at run time)."""

    def value(self, features: np.ndarray) -> float:
        raise RuntimeError("onnxruntime: invalid input")

    def new_prior(self) -> object:
        from device_agent.policy.detector import ShiftPrior

        return ShiftPrior(fleet=0.05)

    def probability(self, view: object, prior: float) -> float:
        raise RuntimeError("onnxruntime: invalid input")


def test_a_model_that_raises_never_fails_the_app_request() -> None:
    from device_agent.inference.models import ShiftDetectorSlot

    agent = service(FakeCloud(), value=1.0)
    assert agent.value_model is not None
    agent.value_model.current = BrokenModel()
    agent.shift_detector = ShiftDetectorSlot()
    agent.shift_detector.current = BrokenModel()
    pages = [agent.recommend("d", 4) for _ in range(3)]
    assert all(len(p.items) == 4 for p in pages)
    last = pages[-1].decision
    assert last.value == last.shift == last.features[0]  # both fell back to the formula
