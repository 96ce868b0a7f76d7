"""ReportEvents: validated device events appended, all or none and once per batch id, to the
bounded event stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloud_service import metrics
from cloud_service.auth import DeviceAuth
from cloud_service.domain import Event
from cloud_service.errors import Unavailable
from cloud_service.store.base import EventLog, StoreUnavailable
from cloud_service.validation import check_batch_id, check_events


@dataclass(frozen=True)
class EventsReceipt:
    accepted: int  # events of the batch now stored (by this call or an earlier one)
    duplicate: bool  # an earlier call stored this batch id; nothing was appended now


class EventService:
    def __init__(self, auth: DeviceAuth, log: EventLog, n_items: int, max_events: int) -> None:
        self.auth, self.log, self.n_items, self.max_events = auth, log, n_items, max_events

    def report(
        self, device_id: str, events: Sequence[Event], token: str | None, batch_id: str = ""
    ) -> EventsReceipt:
        """The call fails (retryable) rather than acknowledge a loss; a retry with the same
        batch id after a lost answer is acknowledged without storing the batch twice."""
        self.auth.verify(device_id, token)
        check_batch_id(batch_id)
        check_events(events, self.max_events, self.n_items)
        try:
            ids = self.log.append(device_id, events, batch_id)
        except StoreUnavailable as exc:
            raise Unavailable("event stream unavailable; retry later") from exc
        if not ids:
            metrics.EVENT_BATCHES.labels("duplicate").inc()
            return EventsReceipt(len(events), duplicate=True)
        metrics.EVENT_BATCHES.labels("stored").inc()
        metrics.EVENTS.inc(len(ids))
        return EventsReceipt(len(ids), duplicate=False)
