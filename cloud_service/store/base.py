"""The storage interfaces the domain services use, and the one error they raise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cloud_service.domain import BudgetDecision, Event, Session


class StoreUnavailable(RuntimeError):
    """The store could not be reached in time; callers degrade or refuse, never hang."""


class SessionStore(Protocol):
    def load(self, device_id: str) -> Session | None: ...

    def save(self, device_id: str, session: Session) -> None:
        """Write the session and (re)start its TTL."""


class EventLog(Protocol):
    def append(self, device_id: str, events: Sequence[Event], batch_id: str = "") -> list[str]:
        """Append all events or none; return their entry ids once stored. A non-empty batch id
        the device has already stored appends nothing and returns [] (a batch is never empty)."""

    def read(self, count: int) -> list[tuple[str, dict[str, str]]]:
        """The oldest `count` entries (for training jobs and tests)."""


class RequestBudget(Protocol):
    def take(self, cost: float = 1.0) -> BudgetDecision: ...


class Pingable(Protocol):
    def ping(self) -> bool: ...
