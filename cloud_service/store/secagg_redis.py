"""SecAggState on Redis: the phase a JSON string, each board a hash, all under the `{fl}` tag.

The checks of a device's message and its write are one script (atomic); so is the aggregator's
compare-and-set of the phase. Every key expires a TTL after the round's start; an ended
round's phase a TTL after it ended.
"""

from __future__ import annotations

from cloud_service.store.breaker import Breaker
from cloud_service.store.redis_store import RedisClient
from cloud_service.store.secagg_state import BOARDS, STAGE_PHASE, SecAggPhase

# KEYS: phase, board; ARGV: expected phase, device id, payload.
PUT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 'closed' end
local ph = cjson.decode(raw)
if ph['phase'] ~= ARGV[1] then return 'closed' end
local had = redis.call('HGET', KEYS[2], ARGV[2])
if had then
  if had == ARGV[3] then return 'duplicate' end
  return 'conflict'
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 'accepted'
"""

# KEYS: phase; ARGV: expected phase, new phase JSON, new TTL in ms (0: keep the TTL).
ADVANCE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if cjson.decode(raw)['phase'] ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return 1
"""


class SecAggRedis:
    def __init__(self, client: RedisClient, prefix: str, breaker: Breaker) -> None:
        self.client, self.breaker = client, breaker
        self.base = f"{prefix}:{{fl}}:sa"
        self.put_script = client.register_script(PUT)
        self.advance_script = client.register_script(ADVANCE)

    def _phase_key(self, round_id: str) -> str:
        return f"{self.base}:{round_id}:phase"

    def _board_key(self, round_id: str, board: str) -> str:
        return f"{self.base}:{round_id}:b:{board}"

    def start(self, phase: SecAggPhase, ttl_ms: int) -> None:
        with self.breaker.guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*(self._board_key(phase.round_id, b) for b in BOARDS))
            pipe.set(self._phase_key(phase.round_id), phase.to_json(), px=ttl_ms)
            pipe.execute()

    def phase(self, round_id: str) -> SecAggPhase | None:
        with self.breaker.guard():
            raw = self.client.get(self._phase_key(round_id))
        return None if raw is None else SecAggPhase.from_json(raw)  # type: ignore[arg-type]

    def advance(self, expected: str, new: SecAggPhase, ttl_ms: int = 0) -> bool:
        with self.breaker.guard():
            ok = self.advance_script(
                keys=[self._phase_key(new.round_id)], args=[expected, new.to_json(), int(ttl_ms)]
            )
        return bool(ok)

    def put(self, round_id: str, stage: str, device_id: str, payload: bytes) -> str:
        with self.breaker.guard():
            out = self.put_script(
                keys=[self._phase_key(round_id), self._board_key(round_id, stage)],
                args=[STAGE_PHASE[stage], device_id, payload],
            )
        return out.decode() if isinstance(out, bytes) else str(out)

    def board(self, round_id: str, stage: str) -> dict[str, bytes]:
        with self.breaker.guard():
            raw = self.client.hgetall(self._board_key(round_id, stage))
        return {k.decode(): v for k, v in raw.items()}  # type: ignore[union-attr,misc]

    def get(self, round_id: str, stage: str, device_id: str) -> bytes | None:
        with self.breaker.guard():
            return self.client.hget(self._board_key(round_id, stage), device_id)  # type: ignore[return-value]

    def deliver(self, round_id: str, board: str, mail: dict[str, bytes]) -> None:
        if not mail:
            return
        key = self._board_key(round_id, board)
        with self.breaker.guard():
            ttl = int(self.client.pttl(self._phase_key(round_id)))  # type: ignore[arg-type]
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(key, mapping=mail)  # type: ignore[arg-type]
            if ttl > 0:
                pipe.pexpire(key, ttl)
            pipe.execute()

    def drop(self, round_id: str) -> None:
        with self.breaker.guard():
            self.client.delete(*(self._board_key(round_id, b) for b in BOARDS))
