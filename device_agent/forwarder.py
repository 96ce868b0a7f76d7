"""Forwards app events to the cloud's ReportEvents in batches, in a background thread.

The app's call only appends to a bounded queue (never blocks, never waits on the cloud). The
thread sends one device's events per call with a deadline; a batch that fails is retried with
the same batch id (the cloud stores a (device, batch id) once), with backoff while the cloud is
away. Past the bound the oldest queued events are dropped and counted: the feed matters more than
the log.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from device_agent import metrics
from device_agent.ports import CloudError, CloudPort, ReportedEvent

log = logging.getLogger(__name__)

PERMANENT = frozenset({"error"})  # refused as invalid: retrying the same batch cannot help
DELIVERED = ("sent", "duplicate", "refused")  # the batch is done with (refused: dropped)


@dataclass(frozen=True)
class Batch:
    device_id: str
    batch_id: str
    events: list[ReportedEvent]


class EventForwarder:
    def __init__(
        self,
        cloud: CloudPort,
        batch_size: int = 200,
        capacity: int = 100_000,
        interval_s: float = 0.2,
        deadline_s: float = 1.0,
        retry_max_s: float = 5.0,
    ) -> None:
        self.cloud, self.batch_size, self.capacity = cloud, batch_size, capacity
        self.interval_s, self.deadline_s, self.retry_max_s = interval_s, deadline_s, retry_max_s
        self._queues: OrderedDict[str, deque[ReportedEvent]] = OrderedDict()  # oldest device first
        self._queued = 0
        self._pending: Batch | None = None  # sent and not yet acknowledged: retried as is
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-forwarder", daemon=True)
        self.sent = self.dropped = self.refused = self.duplicates = 0

    def offer(self, device_id: str, events: Sequence[ReportedEvent]) -> None:
        """Queue a device's events; O(1) per event. Past the capacity the front of the queue
        that waited longest (the least recently served device's oldest events) is dropped."""
        with self._lock:
            queue = self._queues.get(device_id)
            if queue is None:
                queue = self._queues[device_id] = deque()
            queue.extend(events)
            self._queued += len(events)
            dropped = 0
            while self._queued > self.capacity:
                oldest_device, oldest = next(iter(self._queues.items()))
                oldest.popleft()
                self._queued -= 1
                dropped += 1
                if not oldest:
                    del self._queues[oldest_device]
            full = self._queued >= self.batch_size
            self.dropped += dropped
        if dropped:
            metrics.FORWARDED.labels("dropped").inc(dropped)
        metrics.FORWARD_QUEUE.set(self._queued)
        if full:
            self._wake.set()

    def queued(self) -> int:
        with self._lock:
            return self._queued + (len(self._pending.events) if self._pending else 0)

    def _next_batch(self) -> Batch | None:
        with self._lock:
            if self._pending is not None:
                return self._pending
            if not self._queues:
                return None
            device_id, queue = next(iter(self._queues.items()))
            n = min(self.batch_size, len(queue))
            events = [queue.popleft() for _ in range(n)]
            self._queued -= n
            del self._queues[device_id]
            if queue:  # the rest waits behind the other devices
                self._queues[device_id] = queue
            self._pending = Batch(device_id, uuid.uuid4().hex, events)
            metrics.FORWARD_QUEUE.set(self._queued)
            return self._pending

    def send_one(self) -> str:
        """Send the pending or next batch: sent | duplicate | refused | empty | <error kind>."""
        batch = self._next_batch()
        if batch is None:
            return "empty"
        try:
            _, duplicate = self.cloud.report_events(
                batch.device_id, batch.batch_id, batch.events, self.deadline_s
            )
        except CloudError as exc:
            metrics.FORWARD_CALLS.labels(exc.kind).inc()
            if exc.kind not in PERMANENT:
                return exc.kind  # kept as pending: the same id next time
            log.warning("cloud refused an event batch of %d: %s", len(batch.events), exc)
            self.refused += len(batch.events)
            metrics.FORWARDED.labels("refused").inc(len(batch.events))
            outcome = "refused"
        else:
            outcome = "duplicate" if duplicate else "sent"
            metrics.FORWARD_CALLS.labels(outcome).inc()
            self.sent += len(batch.events)
            self.duplicates += int(duplicate)
            metrics.FORWARDED.labels("sent").inc(len(batch.events))
        with self._lock:
            self._pending = None
        return outcome

    def flush(self) -> str:
        """Send batches until the queue is empty or a call fails; the last outcome."""
        while True:
            outcome = self.send_one()
            if outcome not in DELIVERED or self._stop.is_set():
                return outcome

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(backoff or self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            outcome = self.flush()
            failed = outcome not in (*DELIVERED, "empty")
            backoff = min(self.retry_max_s, max(self.interval_s, 2 * backoff)) if failed else 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_s: float = 2.0) -> None:
        """Stop the thread, then send what is queued for at most about `drain_s`."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=self.deadline_s + 1)
        end = time.monotonic() + drain_s  # bounded: a dead cloud never hangs a shutdown
        while self.queued() and time.monotonic() < end:
            if self.send_one() not in DELIVERED:
                break

    def status(self) -> dict[str, int]:
        return {
            "queued": self.queued(), "sent": self.sent, "dropped": self.dropped,
            "refused": self.refused, "duplicate_batches": self.duplicates,
        }  # fmt: skip
