"""The domain services one replica runs, as the transports see them, and its readiness."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from cloud_service import metrics
from cloud_service.auth import DeviceAuth
from cloud_service.errors import Unavailable
from cloud_service.services.device_models import DeviceModelService
from cloud_service.services.events import EventService
from cloud_service.services.federated import FederatedService
from cloud_service.services.recommend import RecommendService
from cloud_service.settings import CloudSettings


class Pingable(Protocol):
    def ping(self) -> bool: ...


class Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Readiness:
    """Ready = models loaded and not shutting down; Redis down makes it `degraded`, not unready:
    every replica shares the same Redis, so pulling them all out of rotation would serve no one."""

    store: Pingable
    shutting_down: threading.Event = field(default_factory=threading.Event)

    def check(self) -> tuple[bool, dict[str, str]]:
        redis_ok = self.store.ping()
        metrics.REDIS_UP.set(1 if redis_ok else 0)
        if self.shutting_down.is_set():
            return False, {"status": "shutting_down", "redis": "up" if redis_ok else "down"}
        return True, {"status": "ready" if redis_ok else "degraded",
                      "redis": "up" if redis_ok else "down"}  # fmt: skip


@dataclass
class CloudServices:
    settings: CloudSettings
    recommend: RecommendService
    events: EventService
    device_models: DeviceModelService
    readiness: Readiness
    auth: DeviceAuth
    federated: FederatedService | None = None  # None while Redis was down at start-up
    bundle_watch: Startable | None = None  # follows the ranker bundle's `current` (hot swap)

    def require_federated(self) -> FederatedService:
        """The parameter server, or UNAVAILABLE when this replica started without Redis."""
        if self.federated is None:
            raise Unavailable("federated learning is not available on this replica")
        return self.federated
