"""SecAggState in memory (unit tests, single-process runs; nothing expires)."""

from __future__ import annotations

import threading
from collections import defaultdict

from cloud_service.store.secagg_state import STAGE_PHASE, SecAggPhase


class MemorySecAggState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[str, SecAggPhase] = {}
        self._boards: dict[tuple[str, str], dict[str, bytes]] = defaultdict(dict)

    def start(self, phase: SecAggPhase, ttl_ms: int) -> None:
        with self._lock:
            self._phases[phase.round_id] = phase
            for key in [k for k in self._boards if k[0] == phase.round_id]:
                del self._boards[key]

    def phase(self, round_id: str) -> SecAggPhase | None:
        with self._lock:
            return self._phases.get(round_id)

    def advance(self, expected: str, new: SecAggPhase, ttl_ms: int = 0) -> bool:
        with self._lock:
            cur = self._phases.get(new.round_id)
            if cur is None or cur.phase != expected:
                return False
            self._phases[new.round_id] = new
            return True

    def put(self, round_id: str, stage: str, device_id: str, payload: bytes) -> str:
        with self._lock:
            cur = self._phases.get(round_id)
            if cur is None or cur.phase != STAGE_PHASE[stage]:
                return "closed"
            board = self._boards[(round_id, stage)]
            if device_id in board:
                return "duplicate" if board[device_id] == payload else "conflict"
            board[device_id] = payload
            return "accepted"

    def board(self, round_id: str, stage: str) -> dict[str, bytes]:
        with self._lock:
            return dict(self._boards.get((round_id, stage), {}))

    def get(self, round_id: str, stage: str, device_id: str) -> bytes | None:
        with self._lock:
            return self._boards.get((round_id, stage), {}).get(device_id)

    def deliver(self, round_id: str, board: str, mail: dict[str, bytes]) -> None:
        with self._lock:
            self._boards[(round_id, board)].update(mail)

    def drop(self, round_id: str) -> None:
        with self._lock:
            for key in [k for k in self._boards if k[0] == round_id]:
                del self._boards[key]
