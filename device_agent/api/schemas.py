"""Pydantic models of the agent's REST surface (the app's contract)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEVICE_ID = r"^[A-Za-z0-9_.:-]{1,64}$"


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=DEVICE_ID)
    k: int = Field(4, ge=1)


class ItemOut(BaseModel):
    item_id: int
    category_id: int


class DecisionOut(BaseModel):
    value: float
    threshold: float
    shift: float
    asked_cloud: bool
    outcome: str


class RecommendOut(BaseModel):
    items: list[ItemOut]
    source: Literal["cloud", "local"]
    decision: DecisionOut
    model_version: str


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: int = Field(ge=0)
    action: Literal["exposure", "click", "purchase"]  # protos.actions.NAMES
    timestamp_ms: int = Field(ge=0)


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=DEVICE_ID)
    events: list[EventIn] = Field(min_length=1)


class EventsOut(BaseModel):
    accepted: int
