"""An event <-> its stream entry: the decision's features and step round-trip, compactly, and
entries written before those fields existed decode with the defaults."""

from __future__ import annotations

import pytest

from cloud_service.domain import Action, Event
from cloud_service.store.codec import (
    OPTIONAL_STREAM_FIELDS,
    STREAM_FIELDS,
    stream_event,
    stream_fields,
)

pytestmark = pytest.mark.unit
FEATURES = (0.125, -3.5, 0.0, 12.0, 1e-4, 0.3333333, 7.0, 0.0, 0.5, 2.0, 1.0, 41.0)
SHOWN = Event(7, Action.EXPOSURE, 1234, 3, "req-1", "cloud", True, 0.25, 0.5, 0.8, FEATURES, 41)


def test_a_decided_event_round_trips_with_its_features_and_step() -> None:
    fields = stream_fields("ph-1", SHOWN, "b-1")
    assert tuple(fields) == STREAM_FIELDS + OPTIONAL_STREAM_FIELDS
    assert fields["features"] == "0.125 -3.5 0 12 0.0001 0.3333333 7 0 0.5 2 1 41"
    assert fields["step"] == "41"
    assert stream_event(fields) == ("ph-1", SHOWN, "b-1")


def test_features_are_written_to_seven_significant_digits() -> None:
    fields = stream_fields("d", Event(1, Action.CLICK, 0, 0, "", features=(1 / 3, 2e6 / 3)), "")
    assert fields["features"] == "0.3333333 666666.7"


def test_an_event_without_a_decision_has_no_optional_fields() -> None:
    plain = Event(3, Action.CLICK, 99, 0, "")
    fields = stream_fields("d", plain, "")
    assert tuple(fields) == STREAM_FIELDS
    assert stream_event(fields) == ("d", plain, "")


def test_an_entry_written_before_the_fields_existed_decodes_with_defaults() -> None:
    old = {
        "device": "ph-1", "batch": "b", "item": "7", "action": "exposure", "ts": "1234",
        "position": "3", "request": "req-1", "source": "local", "asked": "0", "value": "0.25",
        "threshold": "0.5", "propensity": "1",
    }  # fmt: skip
    device, event, batch = stream_event(old)
    assert (device, batch) == ("ph-1", "b")
    assert event.features == () and event.step == 0
    assert event == Event(7, Action.EXPOSURE, 1234, 3, "req-1", "local", False, 0.25, 0.5, 1.0)
