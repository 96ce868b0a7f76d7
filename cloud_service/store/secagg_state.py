"""The state a secure-aggregation round runs on: its phase, and one message board per stage.

Devices post one message per stage (`put`); the aggregator reads the boards, moves the phase on
(`advance`, compare-and-set) and delivers each device what it needs next. `SecAggRedis` and
`MemorySecAggState` implement it and pass one contract suite
(tests/integration/test_secagg_state_contract.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol

PHASES = ("keys", "shares", "masked", "unmask", "applying", "done", "aborted")
# the phase a stage's message is accepted in; "held" is the id set a device pulled
STAGE_PHASE = {"held": "keys", "keys": "keys", "shares": "shares", "masked": "masked",
               "unmask": "unmask"}  # fmt: skip
BOARDS = (*STAGE_PHASE, "inbox", "intersections")


@dataclass(frozen=True)
class SecAggPhase:
    """Where a round is, until when, with its parameters (SecAggParams bytes) and its sets:
    U1 `roster` (advertised keys), U2 `senders` (shared keys), U3 `survivors` (masked input)."""

    round_id: str
    phase: str
    deadline_ms: int
    params: bytes
    roster: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()
    survivors: tuple[str, ...] = ()
    reason: str = ""  # why it aborted
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        d = {
            "round_id": self.round_id, "phase": self.phase, "deadline_ms": self.deadline_ms,
            "params": self.params.hex(), "roster": list(self.roster),
            "senders": list(self.senders), "survivors": list(self.survivors),
            "reason": self.reason, "extra": self.extra,
        }  # fmt: skip
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> SecAggPhase:
        d = json.loads(raw)
        return cls(
            d["round_id"], d["phase"], int(d["deadline_ms"]), bytes.fromhex(d["params"]),
            tuple(d["roster"]), tuple(d["senders"]), tuple(d["survivors"]), d.get("reason", ""),
            dict(d.get("extra", {})),
        )  # fmt: skip


class SecAggState(Protocol):
    def start(self, phase: SecAggPhase, ttl_ms: int) -> None:
        """Begin a round's secure aggregation in `phase` (its boards empty); the phase and every
        board expire `ttl_ms` after the start, so an abandoned round leaves nothing."""
        ...

    def phase(self, round_id: str) -> SecAggPhase | None: ...

    def advance(self, expected: str, new: SecAggPhase, ttl_ms: int = 0) -> bool:
        """Replace the round's phase by `new` only while it is `expected` (compare-and-set);
        `ttl_ms` > 0 restarts its expiry (an ended round's outcome outlives its boards)."""
        ...

    def put(self, round_id: str, stage: str, device_id: str, payload: bytes) -> str:
        """Store a device's message for a stage, atomically with the checks: `closed` when the
        round's phase is not the stage's, `duplicate` when the same bytes are in, `conflict`
        when other bytes are (one message per device and stage), else `accepted`."""
        ...

    def board(self, round_id: str, stage: str) -> dict[str, bytes]:
        """Every device's message on a board (a stage's, or 'inbox' / 'intersections')."""
        ...

    def get(self, round_id: str, stage: str, device_id: str) -> bytes | None: ...

    def deliver(self, round_id: str, board: str, mail: dict[str, bytes]) -> None:
        """The aggregator writes a board for the devices to read (inbox, intersections)."""
        ...

    def drop(self, round_id: str) -> None:
        """Delete every board of the round (its phase stays, for late pollers, until it expires)."""
        ...
