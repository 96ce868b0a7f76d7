"""What the device needs from the cloud, as a protocol, and the plain types it answers with.

`AgentService`, the model poller and the federated participant depend on `CloudPort`; the gRPC
`CloudClient` (device_agent/cloud_client.py) is the implementation, the unit tests' fake another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tandem_core.federated.secagg import EncryptedShare, KeyAdvert, MaskedInput, UnmaskShares
from tandem_core.federated.secure_update import SecureParams
from tandem_core.federated.update import ModelUpdate

# a stage's message: keys, shares, masked input or unmask shares; None = a poll
SecAggStage = KeyAdvert | list[EncryptedShare] | MaskedInput | UnmaskShares | None


class CloudError(Exception):
    """The cloud did not answer usefully; `kind` is timeout | throttled | unavailable | error."""

    def __init__(self, kind: str, detail: str, retry_after_s: float = 0.0) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.retry_after_s = kind, retry_after_s


@dataclass(frozen=True)
class CloudList:
    item_ids: np.ndarray
    category_ids: np.ndarray
    ctr: np.ndarray
    rows: np.ndarray  # (k, dim) float32
    model_version: str
    embedding_version: str
    request_id: str


@dataclass(frozen=True)
class PrivateInterest:
    """What a private Recommend sends instead of the event window: a pseudo-history (M, dim)
    with a weight per row (the clicks it stands for), in the rows of `embedding_version`."""

    interest_set: np.ndarray  # (M, dim) float32; no rows before the first click
    weights: np.ndarray  # (M,) float32
    embedding_version: str


@dataclass(frozen=True)
class DeviceModelBytes:
    version: str
    sha256: str
    onnx_model: bytes
    not_modified: bool
    embedding_version: str = ""  # the rows the model was trained on (the handshake)
    kind: str = "reranker"
    manifest: str = ""  # the signed manifest (JSON) the agent verifies before installing


@dataclass(frozen=True)
class Submodel:
    item_ids: np.ndarray  # sorted; row k of rows belongs to item_ids[k]
    rows: np.ndarray
    dense: dict[str, np.ndarray]
    base_version: int
    round_id: str  # the open round, "" if none
    selected: bool  # whether this device trains in it
    secure: SecureParams | None = None  # the round takes masked inputs (SecureAggregate) only


@dataclass(frozen=True)
class SecAggReply:
    """The cloud's answer in a secure-aggregation round: its phase and the next stage's input."""

    phase: str  # keys | shares | masked | unmask | done | aborted
    accepted: bool
    reason: str
    roster: list[KeyAdvert] = field(default_factory=list)
    inbox: list[EncryptedShare] = field(default_factory=list)
    intersections: dict[str, np.ndarray] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportedEvent:
    """An app event as the cloud logs it, with the decision behind the page that showed it."""

    item_id: int
    action: int  # a protos.actions.Action code
    timestamp_ms: int
    position: int = 0  # slot on the page that showed the item
    request_id: str = ""  # the cloud list the item came from
    source: str = ""  # cloud | local; "" when the item was not on the last page
    asked_cloud: bool = False
    value: float = 0.0
    threshold: float = 0.0
    propensity: float = 1.0  # of the decision taken; the policy does not randomise yet
    features: tuple[float, ...] = ()  # the request-value features the decision was made on
    step: int = 0  # the session's page counter of the page that showed the item; 0 = unset


class CloudPort(Protocol):
    def recommend(
        self,
        device_id: str,
        k: int,
        recent: list[tuple[int, int, int]],
        exclude: list[int],
        private: PrivateInterest | None = None,
    ) -> CloudList:
        """A fresh ranked list; `recent` is (item, action code, ts ms), latest last. With
        `private` the request is private: `recent` must be empty and nothing is stored."""
        ...

    def device_model(
        self, device_id: str, current_version: str, timeout_s: float, kind: str = "reranker"
    ) -> DeviceModelBytes: ...

    def pull_submodel(
        self, device_id: str, round_id: str, item_ids: list[int], timeout_s: float
    ) -> Submodel: ...

    def push_update(self, update: ModelUpdate, timeout_s: float) -> tuple[bool, str]: ...

    def secure_aggregate(
        self, device_id: str, round_id: str, stage: SecAggStage, timeout_s: float,
        base_version: int = 0,
    ) -> SecAggReply:  # fmt: skip
        """Send a stage of a secure-aggregation round (or poll); the phase and what comes next."""
        ...

    def report_events(
        self, device_id: str, batch_id: str, events: list[ReportedEvent], timeout_s: float
    ) -> tuple[int, bool]:
        """(accepted, duplicate); a retry with the same batch id is stored once."""
        ...
