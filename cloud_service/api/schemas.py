"""Pydantic models of the REST surface; vectors are base64 float32 bytes with a dim, as in gRPC."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

ActionName = Literal["exposure", "click", "purchase"]  # protos.actions.NAMES


def valid_base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data is not valid base64") from None
    return value


class VectorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(ge=1, le=4096)
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
    model_config = ConfigDict(extra="forbid")
    rows: int = Field(ge=0, le=4096)
    cols: int = Field(ge=1, le=4096)
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
    model_config = ConfigDict(extra="forbid")
    item_id: int
    action: ActionName
    timestamp_ms: int = Field(ge=0)


class RecommendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str
    k: int = Field(ge=1)
    recent: list[BehaviorIn] = []
    interest: VectorIn | None = None
    model_version: str = ""
    exclude_item_ids: list[int] = []
    # the private mode (RecommendRequest in the .proto): no `recent`, nothing stored
    private: bool = False
    interest_set: MatrixIn | None = None
    interest_weights: list[float] = []


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
    model_config = ConfigDict(extra="forbid")
    item_id: int
    action: ActionName
    timestamp_ms: int = Field(ge=0)
    position: int = Field(0, ge=0)
    request_id: str = ""
    # the decision behind the page (exposures); checked with the gRPC fields in validation.py
    source: Literal["", "cloud", "local"] = ""
    asked_cloud: bool = False
    value: float = 0.0
    threshold: float = 0.0
    propensity: float = 1.0
    features: list[float] = []  # the request-value features of the decision (<= 32)
    step: int = 0  # the device's page counter of that page; 0 = unset


class EventsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str
    events: list[EventIn]
    batch_id: str = ""  # a retry with the same id is stored once


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
