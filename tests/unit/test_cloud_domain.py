"""Cloud domain pieces without servers: auth, validation, errors table, serde, bucket, breaker."""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_service import errors
from cloud_service.api.schemas import EventsBody, RecommendBody
from cloud_service.api.serde import events_from_body, query_from_body, ranked_to_body
from cloud_service.auth import DeviceAuth
from cloud_service.domain import Action, Behavior, Event, RankedList, RecommendQuery
from cloud_service.services.recommend import merge_recent
from cloud_service.store.base import StoreUnavailable
from cloud_service.store.breaker import Breaker
from cloud_service.store.memory import MemoryBudget
from cloud_service.validation import check_events, check_query
from cloud_service.wire import events_from_proto, query_from_proto, ranked_to_proto
from protos.tandem.v1 import tandem_pb2 as pb
from protos.vectors import vector_from_proto, vector_to_proto

pytestmark = pytest.mark.unit
LIMITS = {"recent": 10, "exclude": 10}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tokens_bind_to_the_device_id() -> None:
    auth = DeviceAuth(b"s" * 32)
    auth.verify("dev-1", auth.token_for("dev-1"))
    for device, token in [("dev-2", auth.token_for("dev-1")), ("dev-1", None), ("dev-1", "")]:
        with pytest.raises(errors.Unauthenticated):
            auth.verify(device, token)
    with pytest.raises(errors.InvalidArgument):
        auth.verify("{dev}", auth.token_for("{dev}"))  # braces would break key hash tags
    assert DeviceAuth(b"t" * 32).token_for("dev-1") != auth.token_for("dev-1")
    with pytest.raises(ValueError):
        DeviceAuth(b"short")


def test_every_domain_error_has_a_status() -> None:
    for cls in errors.TandemError.__subclasses__():
        exc = cls(1.0) if cls is errors.BudgetExhausted else cls("x")
        code, http = errors.status_of(exc)
        assert code != "INTERNAL" and code in grpc.StatusCode.__members__ and 400 <= http < 600


def test_validation_names_the_field() -> None:
    ok = RecommendQuery("d", 5, (Behavior(3, Action.CLICK, 1),), np.zeros(4, np.float32))
    check_query(ok, n_items=10, dim=4, max_k=20, limits=LIMITS)
    cases = {
        "k must be": RecommendQuery("d", 0),
        "unknown item id 10": RecommendQuery("d", 5, (Behavior(10, Action.CLICK, 1),)),
        "expected dim 4": RecommendQuery("d", 5, interest=np.zeros(3, np.float32)),
        "NaN": RecommendQuery("d", 5, interest=np.array([0, 0, 0, np.nan], np.float32)),
        "exclude_item_ids": RecommendQuery("d", 5, exclude=tuple(range(11))),
    }
    for message, query in cases.items():
        with pytest.raises(errors.InvalidArgument, match=message):
            check_query(query, n_items=10, dim=4, max_k=20, limits=LIMITS)
    with pytest.raises(errors.InvalidArgument, match="empty"):
        check_events([], 5, 10)
    with pytest.raises(errors.InvalidArgument, match="position"):
        check_events([Event(1, Action.CLICK, 1, 10**6, "")], 5, 10)


def test_merge_recent_dedupes_orders_and_bounds() -> None:
    stored = [Behavior(1, Action.CLICK, 10), Behavior(2, Action.CLICK, 20)]
    new = (
        Behavior(2, Action.CLICK, 20),
        Behavior(3, Action.EXPOSURE, 15),
        Behavior(4, Action.CLICK, 30),
    )
    assert [b.item_id for b in merge_recent(stored, new, keep=3)] == [3, 2, 4]


def _ranked() -> RankedList:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    return RankedList(
        np.array([7, 9]), np.array([1, 2]), np.float32([0.5, 0.25]), np.float32([0.1, 0.05]),
        np.float32([0.6, 0.3]), rows, "din-x", "emb-y", "rid", False,
    )  # fmt: skip


def test_grpc_and_rest_serde_carry_the_same_query_and_list() -> None:
    interest = np.float32([0.5, -1.0, 2.0])
    g = query_from_proto(pb.RecommendRequest(
        device_id="d", k=4, interest=vector_to_proto(interest), exclude_item_ids=[8],
        recent=[pb.Behavior(item_id=3, action=pb.PURCHASE, timestamp_ms=5)],
    ))  # fmt: skip
    r = query_from_body(RecommendBody.model_validate({
        "device_id": "d", "k": 4, "exclude_item_ids": [8],
        "interest": {"dim": 3, "data": __import__("base64").b64encode(interest.tobytes()).decode()},
        "recent": [{"item_id": 3, "action": "purchase", "timestamp_ms": 5}],
    }))  # fmt: skip
    assert (g.device_id, g.k, g.recent, g.exclude) == (r.device_id, r.k, r.recent, r.exclude)
    assert g.recent == (Behavior(3, Action.PURCHASE, 5),)
    np.testing.assert_array_equal(g.interest, r.interest)
    proto, body = ranked_to_proto(_ranked()), ranked_to_body(_ranked())
    assert [i.item_id for i in proto.items] == [i.item_id for i in body.items] == [7, 9]
    np.testing.assert_array_equal(vector_from_proto(proto.items[1].embedding), [3, 4, 5])
    e_g = events_from_proto(pb.ReportEventsRequest(
        device_id="d", events=[pb.Event(item_id=1, action=pb.CLICK, timestamp_ms=2, position=3)]
    ))  # fmt: skip
    e_r = events_from_body(EventsBody.model_validate({"device_id": "d", "events": [
        {"item_id": 1, "action": "click", "timestamp_ms": 2, "position": 3}]}))  # fmt: skip
    assert e_g == e_r == [Event(1, Action.CLICK, 2, 3, "")]


def test_unspecified_action_on_the_wire_is_refused() -> None:
    with pytest.raises(errors.InvalidArgument, match="action"):
        query_from_proto(pb.RecommendRequest(device_id="d", k=1, recent=[pb.Behavior(item_id=1)]))


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.5, 100), burst=st.floats(1, 50),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)  # fmt: skip
def test_token_bucket_never_admits_more_than_burst_plus_refill(
    rate: float, burst: float, gaps: list[float]
) -> None:
    clock = FakeClock()
    bucket = MemoryBudget(rate, burst, clock)
    admitted = 0
    for gap in gaps:
        clock.now += gap
        decision = bucket.take()
        admitted += decision.allowed
        assert decision.allowed or decision.retry_after_s > 0
    assert admitted <= burst + rate * clock.now + 1e-9


def test_breaker_opens_after_a_failure_and_closes_after_the_wait() -> None:
    import redis

    clock = FakeClock()
    breaker = Breaker(open_s=1.0, clock=clock)
    with pytest.raises(StoreUnavailable), breaker.guard():
        raise redis.ConnectionError("down")
    with pytest.raises(StoreUnavailable, match="circuit open"), breaker.guard():
        pass
    clock.now = 1.01
    with breaker.guard():
        pass  # probing again after the wait


def test_cloud_serving_path_does_not_import_torch() -> None:
    code = (
        "import sys, cloud_service.main, cloud_service.build, cloud_service.server; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
