"""The one action vocabulary: domain codes (0..2, the models' one-hot index), names, wire map.

Everything inside a process (sessions, model inputs, the world's feedback, training logs) uses
`Action` (0 exposure, 1 click, 2 purchase). The protobuf enum numbers them 1..3 with 0 as
UNSPECIFIED; `to_wire` / `from_wire` are the only crossings. Apps and REST bodies use `NAMES`.
"""

from __future__ import annotations

from enum import IntEnum

from protos.tandem.v1 import tandem_pb2 as pb


class Action(IntEnum):
    EXPOSURE = 0
    CLICK = 1
    PURCHASE = 2


NAMES: tuple[str, ...] = tuple(a.name.lower() for a in Action)  # index = code
BY_NAME: dict[str, Action] = {name: Action(code) for code, name in enumerate(NAMES)}
_TO_WIRE = {Action.EXPOSURE: pb.EXPOSURE, Action.CLICK: pb.CLICK, Action.PURCHASE: pb.PURCHASE}
_FROM_WIRE = {wire: action for action, wire in _TO_WIRE.items()}


def to_wire(action: int) -> pb.Action.ValueType:
    """The protobuf enum number of a domain action code."""
    return _TO_WIRE[Action(action)]


def from_wire(value: int) -> Action:
    """The domain action of a protobuf enum number; ValueError for UNSPECIFIED or unknown."""
    try:
        return _FROM_WIRE[value]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"action {value} is not EXPOSURE, CLICK or PURCHASE") from None


def code_of(clicked: bool, bought: bool) -> Action:
    """The furthest step of the funnel an impression reached."""
    return Action.PURCHASE if bought else Action.CLICK if clicked else Action.EXPOSURE
