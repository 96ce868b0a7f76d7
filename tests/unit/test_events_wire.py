"""Event conversions (gRPC and REST) round-trip with the decision fields; bad fields refused."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from cloud_service.api.schemas import EventsBody
from cloud_service.api.serde import events_from_body
from cloud_service.domain import Action, Event
from cloud_service.errors import InvalidArgument
from cloud_service.validation import check_batch_id, check_events
from cloud_service.wire import event_to_proto, events_from_proto
from protos.tandem.v1 import tandem_pb2 as pb

pytestmark = pytest.mark.unit
SHOWN = Event(
    7, Action.EXPOSURE, 1234, 3, "req-1", "local", True, 0.25, 0.5, 1.0,
    features=(0.5, -1.25, 0.0, 12.0), step=41,
)  # fmt: skip


def test_grpc_round_trip_keeps_every_field() -> None:
    request = pb.ReportEventsRequest(device_id="d", events=[event_to_proto(SHOWN)], batch_id="b")
    wire = pb.ReportEventsRequest.FromString(request.SerializeToString())
    assert events_from_proto(wire) == [SHOWN] and wire.batch_id == "b"


def test_an_unset_propensity_reads_as_one() -> None:
    request = pb.ReportEventsRequest(events=[pb.Event(item_id=1, action=pb.CLICK)])
    assert events_from_proto(request)[0].propensity == 1.0


def test_an_event_without_a_decision_has_no_features_and_step_zero() -> None:
    request = pb.ReportEventsRequest(events=[pb.Event(item_id=1, action=pb.CLICK)])
    wire = pb.ReportEventsRequest.FromString(request.SerializeToString())
    (event,) = events_from_proto(wire)
    assert event.features == () and event.step == 0


def test_rest_body_gives_the_same_events() -> None:
    body = EventsBody.model_validate({
        "device_id": "d", "batch_id": "b",
        "events": [{"item_id": 7, "action": "exposure", "timestamp_ms": 1234, "position": 3,
                    "request_id": "req-1", "source": "local", "asked_cloud": True,
                    "value": 0.25, "threshold": 0.5, "propensity": 1.0,
                    "features": [0.5, -1.25, 0.0, 12.0], "step": 41}],
    })  # fmt: skip
    assert events_from_body(body) == [SHOWN]


@pytest.mark.parametrize(
    "bad",
    [
        {"value": math.nan}, {"threshold": -math.inf}, {"value": 1e7}, {"propensity": 0.0},
        {"propensity": 1.01}, {"source": "cache"}, {"request_id": "r" * 65},
        {"features": (0.0,) * 33}, {"features": (0.5, math.nan)}, {"features": (1e7,)},
        {"features": (-math.inf,)}, {"step": 10**9 + 1}, {"step": -1},
    ],
)  # fmt: skip
def test_bad_decision_fields_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        check_events([replace(SHOWN, **bad)], limit=10, n_items=100)  # type: ignore[arg-type]


def test_the_feature_and_step_limits_are_inclusive() -> None:
    check_events([replace(SHOWN, features=(1e6,) * 32, step=10**9)], limit=10, n_items=100)


def test_batch_ids_are_bounded() -> None:
    check_batch_id("")
    check_batch_id("a" * 64)
    for bad in ("a" * 65, "{tag}", "a b"):
        with pytest.raises(InvalidArgument):
            check_batch_id(bad)
