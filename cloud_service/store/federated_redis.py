"""Redis state of federated learning: the global model, the round, and the durable update stream.

Every key shares the hash tag `{fl}`, so a round is applied in one MULTI/EXEC (rows, dense
layers, version, round state and the stream acks together) — atomic on one server and legal in
Redis Cluster, at the price of keeping the federated model in one slot (fine to a few GB).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import redis

from cloud_service.store.breaker import Breaker
from cloud_service.store.federated_state import (
    CONTRIBUTIONS_KEPT,
    SEEN_TTL_MS,
    NonFiniteModel,
    RoundContributions,
    RoundInfo,
    RoundNotCurrent,
    StoredPush,
    applied,
    signal_version_for,
    signals_to_drop,
)
from cloud_service.store.redis_store import RedisClient

PAGE = 500  # stream entries per XREADGROUP / XAUTOCLAIM call

# Accept a push only into the open round, from a selected device, before the deadline, once per
# update id and one update per device per round; append it to the stream and remember its entry
# id and the device, all atomically. A retry of the same update id stays `duplicate`. The
# pushed hash maps a device to the round it pushed in, and only the open round's id counts, so
# an entry left from another round (open_round clears the hash in the same MULTI as it writes
# the round, but nothing else depends on that) can neither block nor stand in for a push.
# KEYS: round, selected, seen, updates, pushed (device -> round id of its accepted push)
# ARGV: update id, round id, device id, payload, seen TTL.
PUSH = """
local state = redis.call('HMGET', KEYS[1], 'id', 'state', 'deadline_ms')
if state[1] ~= ARGV[2] or state[2] ~= 'open' then return {'closed', ''} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now_ms > tonumber(state[3]) then return {'late', ''} end
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 then return {'not_selected', ''} end
local seen = redis.call('HGET', KEYS[3], ARGV[1])
if seen then return {'duplicate', seen} end
if redis.call('HGET', KEYS[5], ARGV[3]) == ARGV[2] then return {'already_pushed', ''} end
local id = redis.call('XADD', KEYS[4], '*', 'round', ARGV[2], 'update', ARGV[1], 'push', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], id)
redis.call('HSET', KEYS[5], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return {'accepted', id}
"""

# Take the lease when free, renew it when ours: one script, so it cannot lapse (and pass to
# another aggregator) between the check and the renewal. KEYS: leader; ARGV: name, lease ms.
LEASE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class FederatedStore:
    """FederatedState on Redis."""

    def __init__(self, client: RedisClient, prefix: str, breaker: Breaker) -> None:
        self.client, self.breaker = client, breaker
        k = f"{prefix}:{{fl}}"
        self.k_version, self.k_rows, self.k_dense = f"{k}:version", f"{k}:rows", f"{k}:dense"
        self.k_shapes, self.k_round, self.k_devices = f"{k}:shapes", f"{k}:round", f"{k}:devices"
        self.k_selected, self.k_seen, self.k_updates = f"{k}:selected", f"{k}:seen", f"{k}:updates"
        self.k_leader, self.k_pushed = f"{k}:round:leader", f"{k}:round:pushed"
        self.k_latest, self.k_latest_at = f"{k}:latest", f"{k}:latest:version"
        self.k_signals, self.k_contrib = f"{k}:signals", f"{k}:contrib"
        self.push_script = client.register_script(PUSH)
        self.lease_script = client.register_script(LEASE)

    # --- the global model -------------------------------------------------------------------
    def initialise(self, rows: np.ndarray, dense: dict[str, np.ndarray]) -> bool:
        """Write version 0 once (the first replica wins); False when a model already exists."""
        with self.breaker.guard():
            if not self.client.set(self.k_version, 0, nx=True):
                return False
            pipe = self.client.pipeline(transaction=True)
            for lo in range(0, len(rows), 5000):
                chunk = {
                    i: rows[i].astype("<f4").tobytes() for i in range(lo, min(lo + 5000, len(rows)))
                }
                pipe.hset(self.k_rows, mapping=chunk)  # type: ignore[arg-type]
            pipe.hset(
                self.k_dense, mapping={n: a.astype("<f4").tobytes() for n, a in dense.items()}
            )
            pipe.hset(self.k_shapes, mapping={n: json.dumps(a.shape) for n, a in dense.items()})
            pipe.execute()
        return True

    def row_count(self) -> int:
        with self.breaker.guard():
            return int(self.client.hlen(self.k_rows))  # type: ignore[arg-type]

    def version(self) -> int:
        with self.breaker.guard():
            return int(self.client.get(self.k_version) or 0)  # type: ignore[arg-type]

    def snapshot(
        self, item_ids: Iterable[int], dim: int
    ) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
        """Rows of `item_ids`, all dense layers and the version, read in one MULTI (consistent)."""
        ids = [int(i) for i in item_ids]
        with self.breaker.guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(self.k_rows, ids or [-1])
            pipe.hgetall(self.k_dense)
            pipe.hgetall(self.k_shapes)
            pipe.get(self.k_version)
            raw_rows, raw_dense, shapes, version = pipe.execute()
        rows = np.zeros((len(ids), dim), dtype=np.float32)
        for pos, value in enumerate(raw_rows[: len(ids)]):
            if value is not None:
                rows[pos] = np.frombuffer(value, dtype="<f4")
        dense = {
            n.decode(): np.frombuffer(v, dtype="<f4").reshape(json.loads(shapes[n])).copy()
            for n, v in raw_dense.items()
        }
        return rows, dense, int(version or 0)

    # --- rounds -----------------------------------------------------------------------------
    def register(self, device_id: str) -> None:
        with self.breaker.guard():
            self.client.sadd(self.k_devices, device_id)

    def devices(self) -> list[str]:
        with self.breaker.guard():
            return sorted(d.decode() for d in self.client.smembers(self.k_devices))  # type: ignore[union-attr]

    def current_round(self) -> RoundInfo | None:
        with self.breaker.guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(self.k_round)
            pipe.smembers(self.k_selected)
            info, selected = pipe.execute()
        if not info:
            return None
        d = {k.decode(): v.decode() for k, v in info.items()}
        return RoundInfo(
            d["id"], d["state"], int(d["base_version"]), int(d["deadline_ms"]), int(d["quorum"]),
            frozenset(s.decode() for s in selected),
        )  # fmt: skip

    def open_round(self, info: RoundInfo) -> None:
        with self.breaker.guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.k_round, self.k_selected, self.k_pushed)
            pipe.hset(self.k_round, mapping={
                "id": info.round_id, "state": "open", "base_version": info.base_version,
                "deadline_ms": info.deadline_ms, "quorum": info.quorum,
            })  # fmt: skip
            if info.selected:
                pipe.sadd(self.k_selected, *sorted(info.selected))
            pipe.execute()

    # --- updates ----------------------------------------------------------------------------
    def push(
        self, update_id: str, round_id: str, device_id: str, payload: bytes
    ) -> tuple[str, str]:
        """(outcome, stream entry id); outcome accepted | duplicate | closed | late | not_selected
        | already_pushed.

        The stream is not trimmed by length (that could drop unapplied updates): the aggregator
        deletes entries when it acks them, so it holds exactly the updates not yet applied."""
        with self.breaker.guard():
            outcome, entry = self.push_script(
                keys=[self.k_round, self.k_selected, self.k_seen, self.k_updates, self.k_pushed],
                args=[update_id, round_id, device_id, payload, SEEN_TTL_MS],
            )
        return outcome.decode(), entry.decode() if isinstance(entry, bytes) else str(entry)

    def ensure_group(self, group: str) -> None:
        try:
            self.client.xgroup_create(self.k_updates, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, group: str, consumer: str, pending: bool, block_ms: int) -> list[StoredPush]:
        """This consumer's unacked entries (`pending`, after a restart) or new ones.

        Pending entries are read page by page to the end: they stay pending while the round
        runs, so a single page would hide all but the first 500 until the next claim."""
        if not pending:
            return self._page(group, consumer, ">", block_ms)
        out: list[StoredPush] = []
        start = "0"
        while page := self._page(group, consumer, start, None):
            out.extend(page)
            if len(page) < PAGE:
                break
            start = page[-1].entry_id
        return out

    def _page(
        self, group: str, consumer: str, start: str, block_ms: int | None
    ) -> list[StoredPush]:
        reply: Any = self.client.xreadgroup(
            group, consumer, {self.k_updates: start}, count=PAGE, block=block_ms
        )
        return [
            StoredPush(eid.decode(), f[b"round"].decode(), f[b"update"].decode(), f[b"push"])
            for _, entries in reply or []
            for eid, f in entries
        ]

    def claim_pending(self, group: str, consumer: str) -> None:
        start = "0-0"
        while True:
            reply: Any = self.client.xautoclaim(
                self.k_updates, group, consumer, 0, start, count=PAGE
            )
            start = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if start == "0-0":
                break

    def hold_lease(self, name: str, lease_ms: int) -> bool:
        return bool(self.lease_script(keys=[self.k_leader], args=[name, lease_ms]))

    def finish_round(
        self, group: str, round_id: str, entry_ids: list[str], state: str,
        row_ids: np.ndarray | None = None, row_delta: np.ndarray | None = None,
        dense_delta: dict[str, np.ndarray] | None = None,
        remember: Mapping[str, bytes] | None = None, forget: Sequence[str] = (),
    ) -> int:  # fmt: skip
        """Apply (state 'applied') or drop ('aborted') a round and ack its entries, atomically
        (with FedLaAvg's memory: `remember` stored at the new version, `forget` dropped).

        Optimistic: WATCH the version, so a second aggregator racing on the same round fails
        here (RoundNotCurrent) and re-reads instead of applying twice. Returns the version."""
        apply = state == "applied" and row_ids is not None and row_delta is not None
        ids = [] if row_ids is None else [int(i) for i in row_ids]
        pipe: Any
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(self.k_version, self.k_round)
            if (pipe.hget(self.k_round, "id") or b"").decode() != round_id:
                pipe.unwatch()
                raise RoundNotCurrent(f"round {round_id} is no longer current")
            version = int(pipe.get(self.k_version) or 0)
            current = pipe.hmget(self.k_rows, ids) if apply and ids else []
            shapes = pipe.hgetall(self.k_shapes) if apply else {}
            dense_now = pipe.hgetall(self.k_dense) if apply else {}
            if apply:  # every new value computed (and checked finite) before MULTI
                assert row_delta is not None
                try:
                    new_rows, new_dense = self._applied(
                        ids, current, row_delta, dense_delta or {}, shapes, dense_now
                    )
                except NonFiniteModel:
                    pipe.unwatch()
                    raise
            pipe.multi()
            if apply:
                if new_rows:
                    pipe.hset(self.k_rows, mapping=new_rows)
                if new_dense:
                    pipe.hset(self.k_dense, mapping=new_dense)
                pipe.incr(self.k_version)
                version += 1
                if forget:
                    pipe.hdel(self.k_latest, *forget)
                    pipe.hdel(self.k_latest_at, *forget)
                if remember:
                    pipe.hset(self.k_latest, mapping=dict(remember))  # type: ignore[arg-type]
                    pipe.hset(self.k_latest_at, mapping=dict.fromkeys(remember, version))
            pipe.hset(self.k_round, "state", state)
            if entry_ids:
                pipe.xack(self.k_updates, group, *entry_ids)
                pipe.xdel(self.k_updates, *entry_ids)
            try:
                pipe.execute()
            except redis.WatchError:
                raise RoundNotCurrent(f"round {round_id} changed while it was applied") from None
        return version

    @staticmethod
    def _applied(
        ids: list[int], current: list[Any], row_delta: np.ndarray,
        dense_delta: dict[str, np.ndarray], shapes: dict[bytes, bytes], dense_now: dict[bytes, Any],
    ) -> tuple[dict[int, bytes], dict[str, bytes]]:  # fmt: skip
        """The new stored bytes of every changed row and layer (NonFiniteModel on overflow)."""
        rows = {}
        for item, old, delta in zip(ids, current, row_delta, strict=True):
            base = np.frombuffer(old, dtype="<f4") if old else np.zeros_like(delta)
            rows[item] = applied(base, delta).astype("<f4").tobytes()
        dense = {}
        for name, delta in dense_delta.items():
            shape = tuple(json.loads(shapes[name.encode()]))
            base = np.frombuffer(dense_now[name.encode()], dtype="<f4").reshape(shape)
            dense[name] = applied(base, delta).astype("<f4").tobytes()
        return rows, dense

    def latest_updates(self) -> dict[str, tuple[int, bytes]]:
        with self.breaker.guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(self.k_latest)
            pipe.hgetall(self.k_latest_at)
            payloads, versions = pipe.execute()
        return {d.decode(): (int(versions[d]), p) for d, p in payloads.items() if d in versions}

    # --- contribution estimates ---------------------------------------------------------------
    def put_signal(self, version: int, payload: bytes) -> None:
        """HSET then drop the versions past SIGNALS_KEPT (two jobs racing keep a few more for a
        moment, never fewer)."""
        with self.breaker.guard():
            self.client.hset(self.k_signals, str(int(version)), payload)
            kept = [int(v) for v in self.client.hkeys(self.k_signals)]  # type: ignore[union-attr]
            if drop := signals_to_drop(kept):
                self.client.hdel(self.k_signals, *(str(v) for v in drop))

    def get_signal(self, version: int) -> tuple[int, bytes] | None:
        with self.breaker.guard():
            for _ in range(3):  # a concurrent put may drop the version just listed: re-list
                kept = [int(v) for v in self.client.hkeys(self.k_signals)]  # type: ignore[union-attr]
                at = signal_version_for(kept, version)
                if at is None:
                    return None
                payload: Any = self.client.hget(self.k_signals, str(at))
                if payload is not None:
                    return at, bytes(payload)
        return None

    def record_contributions(self, record: RoundContributions) -> None:
        with self.breaker.guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(self.k_contrib, record.to_json())
            pipe.ltrim(self.k_contrib, 0, CONTRIBUTIONS_KEPT - 1)
            pipe.execute()

    def contributions(self, n: int) -> list[RoundContributions]:
        if n <= 0:
            return []
        with self.breaker.guard():
            raw: Any = self.client.lrange(self.k_contrib, 0, n - 1)
        out = []
        for r in raw:  # a record of another schema (an older replica's) is skipped, not a 500
            try:
                out.append(RoundContributions.from_json(r))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def ack(self, group: str, entry_ids: list[str]) -> None:
        """Drop entries that belong to no current round (late arrivals of a finished round)."""
        if entry_ids:
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.k_updates, group, *entry_ids)
            pipe.xdel(self.k_updates, *entry_ids)
            pipe.execute()
