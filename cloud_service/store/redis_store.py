"""Redis implementations of the stores: sessions, the event stream, the budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from cloud_service.domain import BudgetDecision, Event, Session
from cloud_service.store.base import StoreUnavailable
from cloud_service.store.breaker import Breaker
from cloud_service.store.codec import decode_session, encode_session, stream_fields
from cloud_service.store.keys import Keys

# Token bucket (Redis server clock, so replicas need no clock agreement). Numbers are returned
# as strings: Redis truncates Lua numbers to integers.
TOKEN_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, wait = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


# One server or a Redis Cluster: the stores use only commands both run, with every multi-key
# call (script, MULTI, WATCH) on keys of one hash tag (keys.py), so one slot.
RedisClient: TypeAlias = redis.Redis | RedisCluster


def build_redis(
    url: str, socket_timeout_s: float, retries: int, cluster: bool = False
) -> RedisClient:
    """A client whose every call has a deadline and a bounded, backed-off retry; with `cluster`,
    a RedisCluster that `url` (any one node) introduces to the others."""
    retry = Retry(ExponentialBackoff(cap=0.05, base=0.005), retries)
    if cluster:
        return build_cluster(url, socket_timeout_s, retry)
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


def build_cluster(url: str, socket_timeout_s: float, retry: Retry) -> RedisCluster:
    """RedisCluster reads the slot map at construction, so an unreachable cluster fails here
    (StoreUnavailable naming the node, not the URL's password); the retry is the cluster
    client's own (a call re-sent after a MOVED, a timeout or a failover refreshes the map)."""
    try:
        return RedisCluster.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s,
            retry=retry,
        )  # fmt: skip
    except (RedisClusterException, redis.RedisError) as exc:
        where = urlsplit(url)
        raise StoreUnavailable(
            f"Redis Cluster at {where.hostname}:{where.port or 6379} unreachable: {exc}"
        ) from exc


class RedisStore:
    """Shared client, key names and circuit breaker of the Redis-backed stores."""

    def __init__(self, client: RedisClient, keys: Keys, breaker: Breaker) -> None:
        self.client = client
        self.keys = keys
        self.breaker = breaker

    def ping(self) -> bool:
        try:
            with self.breaker.guard():
                return bool(self.client.ping())
        except StoreUnavailable:
            return False


class RedisSessions:
    def __init__(self, store: RedisStore, ttl_s: int) -> None:
        self.store, self.ttl_s = store, ttl_s

    def load(self, device_id: str) -> Session | None:
        with self.store.breaker.guard():
            data = self.store.client.get(self.store.keys.session(device_id))
        return None if data is None else decode_session(bytes(data))  # type: ignore[arg-type]

    def save(self, device_id: str, session: Session) -> None:
        with self.store.breaker.guard():
            self.store.client.set(
                self.store.keys.session(device_id), encode_session(session), ex=self.ttl_s
            )


# One batch: claim (device, batch id) with SET NX and append every event, in one script, so a
# retried batch is stored once and a stored batch always has its claim (atomic, same slot).
# After the 3 fixed arguments, each event is its number of fields n, then n name/value pairs
# (entries differ in width: the optional fields are sent only when set).
APPEND_BATCH = """
if ARGV[1] ~= '' and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  return {}
end
local ids = {}
local i = 4
while i <= #ARGV do
  local last = i + tonumber(ARGV[i]) * 2
  local args = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*'}
  for j = i + 1, last do args[#args + 1] = ARGV[j] end
  ids[#ids + 1] = redis.call(unpack(args))
  i = last + 1
end
return ids
"""


class RedisEventLog:
    """A bounded Redis Stream; a batch is appended by one Lua script, so all or none, and a
    batch id already stored for the device is not appended again."""

    def __init__(self, store: RedisStore, maxlen: int, dedup_ttl_s: int = 86_400) -> None:
        self.store, self.maxlen, self.dedup_ttl_s = store, maxlen, dedup_ttl_s
        self.script = store.client.register_script(APPEND_BATCH)

    def append(self, device_id: str, events: Sequence[Event], batch_id: str = "") -> list[str]:
        keys = self.store.keys
        args: list[Any] = [batch_id, self.dedup_ttl_s, self.maxlen]
        for e in events:
            fields = stream_fields(device_id, e, batch_id)
            args.append(len(fields))
            for name, value in fields.items():
                args += [name, value]
        with self.store.breaker.guard():
            ids: Any = self.script(keys=[keys.events(), keys.event_batch(device_id, batch_id)],
                                   args=args)  # fmt: skip
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def read(self, count: int) -> list[tuple[str, dict[str, str]]]:
        with self.store.breaker.guard():
            entries: Any = self.store.client.xrange(self.store.keys.events(), count=count)
        return [
            (eid.decode(), {k.decode(): v.decode() for k, v in fields.items()})
            for eid, fields in entries
        ]


class RedisBudget:
    """The global token bucket, one Lua call per request (atomic across replicas)."""

    def __init__(self, store: RedisStore, rate: float, burst: float, name: str = "cloud") -> None:
        self.store, self.rate, self.burst = store, rate, burst
        self.key = store.keys.budget(name)
        self.script = store.client.register_script(TOKEN_BUCKET)

    def take(self, cost: float = 1.0) -> BudgetDecision:
        with self.store.breaker.guard():
            allowed, wait = self.script(keys=[self.key], args=[self.rate, self.burst, cost])
        return BudgetDecision(bool(int(allowed)), float(wait))
