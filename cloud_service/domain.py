"""Plain domain types of the cloud service, shared by both transports and the stores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from protos.actions import Action

__all__ = [
    "Action",
    "Behavior",
    "BudgetDecision",
    "Event",
    "RankedList",
    "RecommendQuery",
    "Session",
]


@dataclass(frozen=True)
class Behavior:
    item_id: int
    action: Action
    timestamp_ms: int


@dataclass(frozen=True)
class RecommendQuery:
    device_id: str
    k: int
    recent: tuple[Behavior, ...] = ()  # most recent last
    interest: np.ndarray | None = None
    model_version: str = ""  # the embedding version the device holds
    exclude: tuple[int, ...] = ()
    # the private mode: no `recent`, nothing stored; a pseudo-history (M, dim) with a weight
    # per row (the clicks it stands for) from the device's interest encoder
    private: bool = False
    interest_set: np.ndarray | None = None
    interest_weights: np.ndarray | None = None


@dataclass(frozen=True)
class RankedList:
    """Top-k, best first; rows[i] is the embedding row of item_ids[i]."""

    item_ids: np.ndarray
    category_ids: np.ndarray
    ctr: np.ndarray
    ctcvr: np.ndarray
    score: np.ndarray
    rows: np.ndarray
    model_version: str
    embedding_version: str
    request_id: str
    degraded: bool  # the session store was unreachable: no stored session was used


@dataclass(frozen=True)
class Event:
    item_id: int
    action: Action
    timestamp_ms: int
    position: int
    request_id: str
    # the decision behind the page that showed the item (exposures), for off-policy training
    source: str = ""  # cloud | local | "" (not an exposure)
    asked_cloud: bool = False
    value: float = 0.0
    threshold: float = 0.0
    propensity: float = 1.0  # probability of the decision taken; 1.0 while nothing randomises
    features: tuple[float, ...] = ()  # the request-value features the decision was made on
    step: int = 0  # the device's page counter of the page that showed the item; 0 = unset


@dataclass
class Session:
    """What the cloud remembers of a device between calls (in Redis, with a TTL)."""

    recent: list[Behavior] = field(default_factory=list)
    served: list[int] = field(default_factory=list)  # items sent to the device, newest last
    interest: np.ndarray | None = None
    interest_version: str = ""


@dataclass(frozen=True)
class BudgetDecision:
    allowed: bool
    retry_after_s: float  # when the next token is due (0 when allowed)
