"""Per-device state of every device this agent serves, in memory, least recently used evicted."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from device_agent.session.state import DeviceSession

T = TypeVar("T")


class DeviceRegistry(Generic[T]):
    """One `T` per device id, made by `factory` on first use; beyond `max_devices` the least
    recently used is dropped."""

    def __init__(self, factory: Callable[[str], T], max_devices: int) -> None:
        self.factory, self.max_devices = factory, max_devices
        self._by_device: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, device_id: str) -> T:
        with self._lock:
            value = self._by_device.get(device_id)
            if value is None:
                value = self._by_device[device_id] = self.factory(device_id)
                while len(self._by_device) > self.max_devices:
                    self._by_device.popitem(last=False)
            else:
                self._by_device.move_to_end(device_id)
            return value

    def snapshot(self) -> list[T]:
        with self._lock:
            return list(self._by_device.values())

    def devices(self) -> list[tuple[str, T]]:
        with self._lock:
            return list(self._by_device.items())


SessionRegistry = DeviceRegistry[DeviceSession]
