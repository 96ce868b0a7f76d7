"""Pydantic models of the agent's REST surface (the app's contract)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from tandem_core.json_numbers import JsonId, JsonInt

DEVICE_ID = r"^[A-Za-z0-9_.:-]{1,64}$"
MAX_K = 1000  # hard caps of the contract; the agent's settings may be lower
MAX_EVENTS = 10_000


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    device_id: str = Field(pattern=DEVICE_ID)
    k: JsonInt = Field(4, ge=1, le=MAX_K)  # and at most DEVICE_MAX_K


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
    # the worst source the page needed, best first: "pool" (this device's cached list),
    # "fleet_list" (the fleet's latest cloud list), "popular" (the agent's popular items),
    # "repeat" (items this device was shown before); "short": fewer than k items even so (an
    # agent that knows fewer than k items, e.g. a fresh agent with a dead cloud)
    fill: Literal["pool", "fleet_list", "popular", "repeat", "short"]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    item_id: JsonId
    action: Literal["exposure", "click", "purchase"]  # protos.actions.NAMES
    timestamp_ms: JsonId


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    device_id: str = Field(pattern=DEVICE_ID)
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)  # and DEVICE_MAX_EVENTS


class EventsOut(BaseModel):
    accepted: int


class ErrorOut(BaseModel):
    """401 and 413 answers (422s are FastAPI's validation errors)."""

    detail: str


def bounded(max_k: int, max_events: int) -> tuple[type[RecommendIn], type[EventsIn]]:
    """The request models with this agent's limits in their schema (and so in its OpenAPI)."""
    recommend = create_model(
        "RecommendIn", __base__=RecommendIn, k=(JsonInt, Field(4, ge=1, le=min(max_k, MAX_K)))
    )
    events = create_model(
        "EventsIn", __base__=EventsIn,
        events=(list[EventIn], Field(min_length=1, max_length=min(max_events, MAX_EVENTS))),
    )  # fmt: skip
    return recommend, events
