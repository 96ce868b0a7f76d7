"""The event forwarder with a fake cloud: batches per device, bounded queue, retry with one id;
and the embedding-version handshake of the agent's service."""

from __future__ import annotations

import numpy as np
import pytest

from device_agent.build import build_pacer, build_session_factory
from device_agent.forwarder import EventForwarder
from device_agent.inference.models import RerankerSlot
from device_agent.ports import CloudError, CloudList, ReportedEvent
from device_agent.service import AgentService, AppEvent
from device_agent.session.registry import SessionRegistry
from device_agent.settings import DeviceSettings, FeedSettings, PacingSettings

pytestmark = pytest.mark.unit


class FakeLog:
    """A cloud's ReportEvents: stores a (device, batch id) once; fails while told to."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], list[ReportedEvent]] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.error: CloudError | None = None
        self.fail_after_store = False  # the answer is lost after the batch was stored

    def report_events(
        self, device_id: str, batch_id: str, events: list[ReportedEvent], timeout_s: float
    ) -> tuple[int, bool]:
        self.calls.append((device_id, batch_id, len(events)))
        if self.error is not None:
            raise self.error
        duplicate = (device_id, batch_id) in self.stored
        self.stored.setdefault((device_id, batch_id), list(events))
        if self.fail_after_store:
            self.fail_after_store = False
            raise CloudError("timeout", "answer lost")
        return len(events), duplicate


def events(n: int, start: int = 0) -> list[ReportedEvent]:
    return [ReportedEvent(start + i, 0, start + i) for i in range(n)]


def test_batches_are_per_device_and_capped() -> None:
    log = FakeLog()
    fwd = EventForwarder(log, batch_size=3)  # type: ignore[arg-type]
    fwd.offer("a", events(5))
    fwd.offer("b", events(2))
    assert fwd.flush() == "empty"
    assert [(d, n) for d, _, n in log.calls] == [("a", 3), ("b", 2), ("a", 2)]
    items = [e.item_id for (d, _), batch in log.stored.items() if d == "a" for e in batch]
    assert items == [0, 1, 2, 3, 4]  # each device's events in order


def test_a_failed_batch_is_retried_with_the_same_id_and_stored_once() -> None:
    log = FakeLog()
    fwd = EventForwarder(log, batch_size=10)  # type: ignore[arg-type]
    fwd.offer("a", events(4))
    log.error = CloudError("unavailable", "down")
    assert fwd.flush() == "unavailable" and fwd.flush() == "unavailable"
    log.error, log.fail_after_store = None, True
    assert fwd.flush() == "timeout"  # stored, but the answer was lost
    assert fwd.flush() == "empty"
    ids = {b for _, b, _ in log.calls}
    assert len(ids) == 1 and len(log.stored) == 1 and fwd.duplicates == 1
    assert fwd.queued() == 0


def test_a_full_queue_drops_the_oldest_and_never_blocks() -> None:
    log = FakeLog()
    log.error = CloudError("unavailable", "down")
    fwd = EventForwarder(log, batch_size=5, capacity=8)  # type: ignore[arg-type]
    fwd.offer("a", events(6))
    fwd.offer("b", events(6, start=100))
    assert fwd.dropped == 4 and fwd.queued() == 8
    log.error = None
    fwd.flush()
    sent = sorted(e.item_id for batch in log.stored.values() for e in batch)
    assert sent == [4, 5, *range(100, 106)]


def test_a_refused_batch_is_dropped_not_retried_forever() -> None:
    log = FakeLog()
    log.error = CloudError("error", "INVALID_ARGUMENT: too many")
    fwd = EventForwarder(log, batch_size=5)  # type: ignore[arg-type]
    fwd.offer("a", events(3))
    assert fwd.flush() == "empty" and fwd.refused == 3 and fwd.queued() == 0


class VersionedCloud:
    """A cloud whose lists carry the embedding version it is told to."""

    def __init__(self, embedding_version: str) -> None:
        self.embedding_version = embedding_version

    def recommend(self, device_id: str, k: int, recent: list, exclude: list[int]) -> CloudList:
        ids = np.arange(k)
        rows = np.random.default_rng(0).normal(size=(k, 8)).astype(np.float32)
        ctr = np.linspace(0.9, 0.1, k, dtype=np.float32)
        return CloudList(ids, ids % 3, ctr, rows, "din", self.embedding_version, "rid-1")


class ReversingModel:
    """A re-ranker that reverses the cloud's order (its logits are minus the cloud's)."""

    version = "rr-1"

    def __init__(self, embedding_version: str) -> None:
        self.embedding_version = embedding_version

    def score(self, behavior, behavior_action, candidates, cloud_score) -> np.ndarray:  # type: ignore[no-untyped-def]
        return -cloud_score


def agent_with(cloud_version: str, model_version: str) -> tuple[AgentService, EventForwarder]:
    settings = DeviceSettings(feed=FeedSettings(pool_size=8), pacing=PacingSettings())
    slot = RerankerSlot()
    slot.current = ReversingModel(model_version)  # type: ignore[assignment]
    fwd = EventForwarder(FakeLog(), batch_size=100)  # type: ignore[arg-type]
    agent = AgentService(
        SessionRegistry(build_session_factory(settings), max_devices=4),
        VersionedCloud(cloud_version), slot, None, 8, 50,  # type: ignore[arg-type]
        pacer=build_pacer(settings.pacing), forwarder=fwd, policy="never",
    )  # fmt: skip
    return agent, fwd


@pytest.mark.parametrize(("cloud", "model", "reranked"), [("emb-1", "emb-1", True),
                                                          ("emb-2", "emb-1", False)])  # fmt: skip
def test_a_version_mismatch_serves_the_cloud_order(cloud: str, model: str, reranked: bool) -> None:
    agent, _ = agent_with(cloud, model)
    agent.recommend("d", 2)  # the first page: no behaviour yet, the cloud's order
    agent.record_events("d", [AppEvent(0, 1, 10)])
    page = agent.recommend("d", 2)
    expected = [7, 6] if reranked else [2, 3]
    assert page.items.items.tolist() == expected
    hs = agent.status()["handshake"]
    assert hs["mismatched_steps"] == (0 if reranked else 2)  # type: ignore[index]
    assert hs["cloud_embedding_version"] == cloud  # type: ignore[index]
    assert hs["reranker_embedding_version"] == model  # type: ignore[index]


def test_reported_events_carry_the_page_slot_and_the_decision() -> None:
    agent, fwd = agent_with("emb-1", "emb-1")
    page = agent.recommend("d", 3)
    shown = page.items.items.tolist()
    agent.record_events("d", [AppEvent(i, 0, 5) for i in shown] + [AppEvent(999, 1, 6)])
    fwd.flush()
    (batch,) = fwd.cloud.stored.values()  # type: ignore[attr-defined]
    assert [e.position for e in batch[:3]] == [0, 1, 2]
    assert all(e.source == "cloud" and e.asked_cloud and e.request_id == "rid-1" for e in batch[:3])
    assert all(e.propensity == 1.0 for e in batch)
    assert batch[3].source == "" and batch[3].position == 0  # not on the page
