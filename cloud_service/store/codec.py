"""Session <-> bytes for the session store (compact JSON; the interest vector as float32 bytes),
and an event <-> the fields of its stream entry (the layout training/event_logs.py reads)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import numpy as np

from cloud_service.domain import Action, Behavior, Event, Session
from protos.actions import BY_NAME, NAMES


def encode_session(s: Session) -> bytes:
    doc = {
        "r": [[b.item_id, int(b.action), b.timestamp_ms] for b in s.recent],
        "s": s.served,
        "i": None
        if s.interest is None
        else base64.b64encode(np.asarray(s.interest, "<f4").tobytes()).decode(),
        "v": s.interest_version,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_session(data: bytes) -> Session:
    doc = json.loads(data)
    interest = None
    if doc.get("i") is not None:
        interest = np.frombuffer(base64.b64decode(doc["i"]), dtype="<f4").astype(np.float32)
    return Session(
        recent=[Behavior(int(i), Action(int(a)), int(t)) for i, a, t in doc["r"]],
        served=[int(x) for x in doc["s"]],
        interest=interest,
        interest_version=str(doc.get("v", "")),
    )


# Every entry of the event stream has these fields (strings; actions by name), then the optional
# ones only when set, so an event without a decision stays small: "features" (the decision's
# features, space-separated, ".7g") when non-empty and "step" when non-zero. Entries written
# before the optional fields existed decode with their defaults.
STREAM_FIELDS = (
    "device", "batch", "item", "action", "ts", "position", "request",
    "source", "asked", "value", "threshold", "propensity",
)  # fmt: skip
OPTIONAL_STREAM_FIELDS = ("features", "step")


def stream_fields(device_id: str, e: Event, batch_id: str) -> dict[str, str]:
    fields = {
        "device": device_id, "batch": batch_id, "item": str(e.item_id),
        "action": NAMES[e.action], "ts": str(e.timestamp_ms), "position": str(e.position),
        "request": e.request_id, "source": e.source, "asked": str(int(e.asked_cloud)),
        "value": format(e.value, ".7g"), "threshold": format(e.threshold, ".7g"),
        "propensity": format(e.propensity, ".7g"),
    }  # fmt: skip
    if e.features:
        fields["features"] = encode_features(e.features)
    if e.step:
        fields["step"] = str(e.step)
    return fields


def stream_event(fields: Mapping[str, str]) -> tuple[str, Event, str]:
    """(device, event, batch id) of a stream entry: the inverse of stream_fields."""
    event = Event(
        int(fields["item"]), BY_NAME[fields["action"]], int(fields["ts"]),
        int(fields["position"]), fields["request"], source=fields["source"],
        asked_cloud=fields["asked"] == "1", value=float(fields["value"]),
        threshold=float(fields["threshold"]), propensity=float(fields["propensity"]),
        features=decode_features(fields.get("features", "")), step=int(fields.get("step", "0")),
    )  # fmt: skip
    return fields["device"], event, fields["batch"]


def encode_features(features: tuple[float, ...]) -> str:
    return " ".join(format(x, ".7g") for x in features)


def decode_features(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split())
