"""Sessions of every device this agent serves, in memory, least recently used evicted first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from device_agent.session.state import DeviceSession


class SessionRegistry:
    def __init__(self, factory: Callable[[str], DeviceSession], max_devices: int) -> None:
        self.factory, self.max_devices = factory, max_devices
        self._sessions: OrderedDict[str, DeviceSession] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, device_id: str) -> DeviceSession:
        with self._lock:
            session = self._sessions.get(device_id)
            if session is None:
                session = self._sessions[device_id] = self.factory(device_id)
                while len(self._sessions) > self.max_devices:
                    self._sessions.popitem(last=False)
            else:
                self._sessions.move_to_end(device_id)
            return session

    def snapshot(self) -> list[DeviceSession]:
        with self._lock:
            return list(self._sessions.values())
