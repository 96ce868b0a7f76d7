"""One contract for every store implementation: in-memory and Redis must behave the same."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import redis

from cloud_service.domain import Action, Behavior, Event, Session
from cloud_service.store.breaker import Breaker
from cloud_service.store.codec import OPTIONAL_STREAM_FIELDS, STREAM_FIELDS, stream_event
from cloud_service.store.keys import Keys
from cloud_service.store.memory import MemoryBudget, MemoryEventLog, MemorySessions
from cloud_service.store.redis_store import (
    RedisBudget,
    RedisEventLog,
    RedisSessions,
    RedisStore,
    build_redis,
)

pytestmark = pytest.mark.integration


@dataclass
class Stores:
    sessions: Any
    events: Any
    budget_factory: Any


@pytest.fixture(params=["memory", "redis", "cluster"])
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    if request.param == "memory":
        yield Stores(
            MemorySessions(ttl_s=1), MemoryEventLog(maxlen=1000),
            lambda rate, burst: MemoryBudget(rate, burst),
        )  # fmt: skip
        return
    cluster = request.param == "cluster"  # a 3-master Redis Cluster (redis_cluster.py)
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = build_redis(url, socket_timeout_s=1.0, retries=1, cluster=cluster)
    store = RedisStore(client, Keys("contract"), Breaker(0.5))
    yield Stores(
        RedisSessions(store, ttl_s=1), RedisEventLog(store, maxlen=1000),
        lambda rate, burst: RedisBudget(store, rate, burst),
    )  # fmt: skip
    client.close()


def test_session_round_trip_and_ttl(stores: Stores) -> None:
    assert stores.sessions.load("a") is None
    session = Session(
        recent=[Behavior(1, Action.CLICK, 10), Behavior(2, Action.EXPOSURE, 11)],
        served=[5, 6, 7], interest=np.arange(4, dtype=np.float32), interest_version="emb-1",
    )  # fmt: skip
    stores.sessions.save("a", session)
    loaded = stores.sessions.load("a")
    assert loaded.recent == session.recent and loaded.served == session.served
    np.testing.assert_array_equal(loaded.interest, session.interest)
    assert loaded.interest_version == "emb-1"
    assert stores.sessions.load("b") is None  # sessions are per device
    time.sleep(1.2)
    assert stores.sessions.load("a") is None


def test_events_append_in_order(stores: Stores) -> None:
    batch = [Event(i, Action.CLICK, 100 + i, i % 4, "req") for i in range(5)]
    ids = stores.events.append("dev", batch)
    assert len(ids) == 5 and len(set(ids)) == 5
    entries = stores.events.read(10)
    assert [e[1]["item"] for e in entries] == ["0", "1", "2", "3", "4"]
    assert entries[0][1]["device"] == "dev" and entries[0][1]["action"] == "click"


def test_events_carry_the_decision_fields(stores: Stores) -> None:
    shown = Event(7, Action.EXPOSURE, 5, 2, "r1", "local", True, 0.25, 0.125, 1.0)
    stores.events.append("dev", [shown], "b-1")
    ((_, fields),) = stores.events.read(1)
    assert tuple(fields) == STREAM_FIELDS
    assert fields["batch"] == "b-1" and fields["position"] == "2" and fields["source"] == "local"
    assert fields["asked"] == "1" and float(fields["value"]) == 0.25
    assert float(fields["threshold"]) == 0.125 and float(fields["propensity"]) == 1.0


def test_events_with_and_without_features_share_a_batch(stores: Stores) -> None:
    """Entries differ in width (the optional fields only when set); each decodes as sent."""
    decided = Event(7, Action.EXPOSURE, 5, 2, "r1", "cloud", True, 0.25, 0.125, 0.5,
                    (0.5, -2.0, 12.0), 41)  # fmt: skip
    plain = Event(8, Action.CLICK, 6, 0, "")
    assert len(stores.events.append("dev", [decided, plain, decided], "b-1")) == 3
    entries = stores.events.read(10)
    wide = STREAM_FIELDS + OPTIONAL_STREAM_FIELDS
    assert [tuple(f) for _, f in entries] == [wide, STREAM_FIELDS, wide]
    assert [stream_event(f) for _, f in entries] == [
        ("dev", decided, "b-1"), ("dev", plain, "b-1"), ("dev", decided, "b-1"),
    ]  # fmt: skip


def test_a_batch_id_is_stored_once_per_device(stores: Stores) -> None:
    batch = [Event(i, Action.CLICK, i, 0, "") for i in range(3)]
    assert len(stores.events.append("dev", batch, "b-1")) == 3
    assert stores.events.append("dev", batch, "b-1") == []  # the retry: nothing appended
    assert len(stores.events.append("other", batch, "b-1")) == 3  # ids are per device
    assert len(stores.events.append("dev", batch, "b-2")) == 3
    assert len(stores.events.append("dev", batch)) == 3  # no id: no dedup
    assert len(stores.events.append("dev", batch)) == 3
    assert len(stores.events.read(100)) == 15


def test_concurrent_retries_of_a_batch_store_it_once(stores: Stores) -> None:
    batch = [Event(i, Action.EXPOSURE, i, i, "") for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: stores.events.append("dev", batch, "same"), range(16)))
    assert sorted(len(r) for r in results) == [0] * 15 + [20]
    assert len(stores.events.read(1000)) == 20


def test_budget_bucket_refuses_past_the_burst_and_refills(stores: Stores) -> None:
    budget = stores.budget_factory(20.0, 3.0)  # 20 tokens/s, burst 3
    decisions = [budget.take() for _ in range(4)]
    assert [d.allowed for d in decisions[:3]] == [True, True, True]
    refused = decisions[3]
    assert not refused.allowed and 0 < refused.retry_after_s <= 0.05 + 1e-6
    time.sleep(refused.retry_after_s + 0.02)
    assert budget.take().allowed


def test_redis_keys_are_prefixed_and_hash_tagged(redis_url: str) -> None:
    client = build_redis(redis_url, 1.0, 1)
    store = RedisStore(client, Keys("pfx"), Breaker(0.5))
    RedisSessions(store, 60).save("dev-9", Session())
    RedisEventLog(store, 10).append("dev-9", [Event(1, Action.CLICK, 1, 0, "")], "b-9")
    RedisBudget(store, 1.0, 1.0).take()
    keys = sorted(k.decode() for k in client.keys("*"))
    assert all(k.startswith("pfx:{") for k in keys), keys
    assert "pfx:{dev:dev-9}:session:v2" in keys and "pfx:{events}" in keys
    assert client.ttl("pfx:{events}:batch:dev-9:b-9") > 0  # batch claims expire
    assert client.ttl("pfx:{dev:dev-9}:session:v2") > 0
    for key in keys:  # Cluster places each key by its tag alone: multi-key calls stay in one slot
        tag = key[key.index("{") + 1 : key.index("}")]
        assert redis.cluster.key_slot(key.encode()) == redis.cluster.key_slot(tag.encode())
    client.close()
