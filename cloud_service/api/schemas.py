"""Pydantic models of the REST surface; vectors are base64 float32 bytes with a dim, as in gRPC."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem_core.json_numbers import JsonId, JsonInt

ActionName = Literal["exposure", "click", "purchase"]  # protos.actions.NAMES
# Request models are strict ("1" is not 1) with JSON-safe integers (tandem_core.json_numbers):
# larger numbers are a 422 here, not a 500 deeper down. Limits that depend on the settings or
# the served model (CLOUD_MAX_K, the catalogue, the vectors' dim) are checked by validation.py
# with the gRPC calls and answered 422 the same way.
ItemId = JsonId
Millis = JsonId
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]  # auth.DEVICE_ID
MAX_LIST = 10_000  # any list in a body; the settings' limits are lower


def valid_base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data is not valid base64") from None
    return value


class VectorIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    dim: JsonInt = Field(ge=1, le=4096)
    data: str = Field(description="base64 of dim little-endian float32 values")

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str) -> str:
        return valid_base64(value)

    def array(self) -> np.ndarray:
        raw = base64.b64decode(self.data)
        if len(raw) != 4 * self.dim:
            raise ValueError(f"expected {4 * self.dim} bytes for dim {self.dim}, got {len(raw)}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)


class MatrixIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    rows: JsonInt = Field(ge=0, le=4096)
    cols: JsonInt = Field(ge=1, le=4096)
    data: str = Field(description="base64 of rows × cols little-endian float32 values, row-major")

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str) -> str:
        return valid_base64(value)

    def array(self) -> np.ndarray:
        raw = base64.b64decode(self.data)
        if len(raw) != 4 * self.rows * self.cols:
            raise ValueError(
                f"expected {4 * self.rows * self.cols} bytes for {self.rows}×{self.cols}, "
                f"got {len(raw)}"
            )
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(self.rows, self.cols)


class VectorOut(BaseModel):
    dim: int
    data: str

    @staticmethod
    def of(row: np.ndarray) -> VectorOut:
        arr = np.ascontiguousarray(row, dtype="<f4")
        return VectorOut(dim=int(arr.shape[0]), data=base64.b64encode(arr.tobytes()).decode())


class BehaviorIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    item_id: ItemId
    action: ActionName
    timestamp_ms: Millis


class RecommendBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    device_id: DeviceId
    k: JsonInt = Field(ge=1, le=2000)  # and at most CLOUD_MAX_K
    recent: list[BehaviorIn] = Field([], max_length=MAX_LIST)  # and CLOUD_MAX_RECENT
    interest: VectorIn | None = None
    model_version: str = Field("", max_length=128)
    exclude_item_ids: list[ItemId] = Field([], max_length=MAX_LIST)  # and CLOUD_MAX_EXCLUDE
    # the private mode (RecommendRequest in the .proto): no `recent`, nothing stored
    private: bool = False
    interest_set: MatrixIn | None = None
    interest_weights: list[float] = Field([], max_length=4096)


class ScoredItemOut(BaseModel):
    item_id: int
    category_id: int
    ctr: float
    ctcvr: float
    score: float
    embedding: VectorOut


class RecommendOut(BaseModel):
    items: list[ScoredItemOut]
    model_version: str
    embedding_version: str
    request_id: str
    degraded: bool


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    item_id: ItemId
    action: ActionName
    timestamp_ms: Millis
    position: JsonInt = Field(0, ge=0, lt=10_000)
    request_id: str = Field("", max_length=64)  # validation.MAX_REQUEST_ID
    # the decision behind the page (exposures); checked with the gRPC fields in validation.py
    source: Literal["", "cloud", "local"] = ""
    asked_cloud: bool = False
    value: float = 0.0
    threshold: float = 0.0
    propensity: float = 1.0
    features: list[float] = Field([], max_length=32)  # the request-value features of the decision
    step: JsonInt = Field(0, ge=0, le=10**9)  # the device's page counter of that page; 0 = unset


class EventsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    device_id: DeviceId
    events: list[EventIn] = Field(max_length=MAX_LIST)  # and CLOUD_MAX_EVENTS
    batch_id: str = Field("", pattern=r"^([A-Za-z0-9_.:-]{1,64})?$")  # a retry is stored once


class EventsOut(BaseModel):
    accepted: int
    duplicate: bool = False


class DeviceModelOut(BaseModel):
    version: str
    sha256: str
    embedding_version: str
    not_modified: bool
    onnx_model: str = Field(description="base64 of the ONNX file; empty when not_modified")
    kind: str
    manifest: str = Field(description="the signed manifest (JSON); empty when not_modified")


class PushOut(BaseModel):
    """Whether the update was stored durably (its stream entry), or why it was refused."""

    accepted: bool
    reason: str
    stream_entry_id: str


class ErrorOut(BaseModel):
    error: str
    detail: str


class ScoredDeviceOut(BaseModel):
    device_id: str
    score: float | None  # None: the update was not finite


class RoundContributionsOut(BaseModel):
    """One round's contribution scores: how many, the extremes, who was left out."""

    round_id: str
    state: str  # applied | aborted
    version: int  # the model version the updates were scored against
    signal_version: int
    version_distance: int  # version − signal_version: how stale the validation signal was
    mode: str  # first_order | fisher
    devices: int
    excluded: list[str]
    top: list[ScoredDeviceOut]  # highest first
    bottom: list[ScoredDeviceOut]  # lowest first
    at_ms: int


class ContributionsOut(BaseModel):
    rounds: list[RoundContributionsOut]  # newest first; empty until a round is scored
