"""Session <-> bytes for the session store (compact JSON; the interest vector as float32 bytes)."""

from __future__ import annotations

import base64
import json

import numpy as np

from cloud_service.domain import Action, Behavior, Session


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
