"""One contract for SecAggState: the in-memory twin and the Redis boards must behave the same."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cloud_service.store.breaker import Breaker
from cloud_service.store.redis_store import build_redis
from cloud_service.store.secagg_memory import MemorySecAggState
from cloud_service.store.secagg_redis import SecAggRedis
from cloud_service.store.secagg_state import SecAggPhase, SecAggState

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis", "cluster"])
def state(request: pytest.FixtureRequest) -> Iterator[SecAggState]:
    if request.param == "memory":
        yield MemorySecAggState()
        return
    cluster = request.param == "cluster"  # a 3-master Redis Cluster (redis_cluster.py)
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = build_redis(url, 2.0, 1, cluster=cluster)
    yield SecAggRedis(client, "contract-" + uuid.uuid4().hex[:6], Breaker(0.5))
    client.close()


def started(state: SecAggState, phase: str = "keys") -> SecAggPhase:
    p = SecAggPhase("r-1", phase, 10**13, b"\x08\x02", roster=("a", "b"))
    state.start(p, ttl_ms=60_000)
    return p


def test_phase_round_trips(state: SecAggState) -> None:
    p = started(state)
    assert state.phase("r-1") == p
    assert state.phase("r-unknown") is None


def test_put_is_one_message_per_device_and_stage(state: SecAggState) -> None:
    started(state)
    assert state.put("r-1", "keys", "a", b"k1") == "accepted"
    assert state.put("r-1", "keys", "a", b"k1") == "duplicate"
    assert state.put("r-1", "keys", "a", b"other") == "conflict"
    assert state.get("r-1", "keys", "a") == b"k1"  # the conflict changed nothing
    assert state.put("r-1", "held", "a", b"ids") == "accepted"  # held is taken in 'keys' too
    assert state.board("r-1", "keys") == {"a": b"k1"}


def test_put_outside_its_phase_is_closed(state: SecAggState) -> None:
    started(state)
    assert state.put("r-1", "masked", "a", b"m") == "closed"
    assert state.put("r-2", "keys", "a", b"k") == "closed"  # no such round
    assert state.board("r-1", "masked") == {}


def test_advance_is_compare_and_set(state: SecAggState) -> None:
    p = started(state)
    nxt = SecAggPhase("r-1", "shares", 10**13, p.params, roster=("a", "b"))
    assert state.advance("keys", nxt)
    assert not state.advance("keys", SecAggPhase("r-1", "aborted", 0, p.params))
    assert state.phase("r-1") == nxt
    assert state.put("r-1", "keys", "b", b"late") == "closed"
    assert state.put("r-1", "shares", "a", b"s") == "accepted"


def test_deliver_and_drop(state: SecAggState) -> None:
    started(state)
    state.put("r-1", "keys", "a", b"k")
    state.deliver("r-1", "inbox", {"a": b"mail-a", "b": b"mail-b"})
    assert state.get("r-1", "inbox", "b") == b"mail-b"
    state.drop("r-1")
    assert state.board("r-1", "keys") == {} and state.get("r-1", "inbox", "a") is None
    assert state.phase("r-1") is not None  # late pollers still learn how it ended


def test_start_clears_a_previous_run_of_the_round(state: SecAggState) -> None:
    started(state)
    state.put("r-1", "keys", "a", b"k")
    started(state)
    assert state.board("r-1", "keys") == {}
