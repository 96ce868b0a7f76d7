"""ReportEvents: validated device events appended, all or none, to the bounded event stream."""

from __future__ import annotations

from collections.abc import Sequence

from cloud_service import metrics
from cloud_service.auth import DeviceAuth
from cloud_service.domain import Event
from cloud_service.errors import Unavailable
from cloud_service.store.base import EventLog, StoreUnavailable
from cloud_service.validation import check_events


class EventService:
    def __init__(self, auth: DeviceAuth, log: EventLog, n_items: int, max_events: int) -> None:
        self.auth, self.log, self.n_items, self.max_events = auth, log, n_items, max_events

    def report(self, device_id: str, events: Sequence[Event], token: str | None) -> int:
        """Number of events stored; the call fails (retryable) rather than acknowledge a loss."""
        self.auth.verify(device_id, token)
        check_events(events, self.max_events, self.n_items)
        try:
            ids = self.log.append(device_id, events)
        except StoreUnavailable as exc:
            raise Unavailable("event stream unavailable; retry later") from exc
        metrics.EVENTS.inc(len(ids))
        return len(ids)
