"""One contract for FederatedState: the in-memory twin and the Redis store must behave the same."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from cloud_service.store.breaker import Breaker
from cloud_service.store.federated_memory import MemoryFederatedState
from cloud_service.store.federated_redis import FederatedStore
from cloud_service.store.federated_state import (
    CONTRIBUTIONS_KEPT,
    FederatedState,
    NonFiniteModel,
    RoundContributions,
    RoundInfo,
    RoundNotCurrent,
)
from cloud_service.store.redis_store import build_redis

pytestmark = pytest.mark.integration
GROUP = "aggregators"
DIM = 4


class FakeClock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Subject:
    state: FederatedState
    advance: Callable[[float], None]  # let this much time pass (the twin's clock, Redis's own)


@pytest.fixture(params=["memory", "redis", "cluster"])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "memory":
        clock = FakeClock()
        yield Subject(MemoryFederatedState(clock), clock.advance)
        return
    cluster = request.param == "cluster"  # a 3-master Redis Cluster (redis_cluster.py)
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = build_redis(url, 2.0, 1, cluster=cluster)
    yield Subject(FederatedStore(client, "contract", Breaker(0.5)), time.sleep)
    client.close()


def model(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(6, DIM)).astype(np.float32)
    return rows, {"w": rng.normal(size=(2, 3)).astype(np.float32), "b": np.ones(3, np.float32)}


def a_round(
    round_id: str = "r-1", selected: tuple[str, ...] = ("d1", "d2"), deadline_s: float = 60.0
) -> RoundInfo:
    deadline_ms = int((time.time() + deadline_s) * 1000)
    return RoundInfo(round_id, "open", 0, deadline_ms, 1, frozenset(selected))


def started(state: FederatedState, rnd: RoundInfo | None = None) -> RoundInfo:
    """A model at version 0, devices d1..d3 registered, a round open, the group made."""
    state.initialise(*model())
    for d in ("d3", "d1", "d2"):
        state.register(d)
    rnd = rnd or a_round()
    state.open_round(rnd)
    state.ensure_group(GROUP)
    return rnd


def test_initialise_writes_version_zero_once(subject: Subject) -> None:
    state = subject.state
    assert state.version() == 0 and state.row_count() == 0
    rows, dense = model(0)
    assert state.initialise(rows, dense)
    assert not state.initialise(*model(1))  # a second replica finds the model and keeps it
    got_rows, got_dense, version = state.snapshot(range(6), DIM)
    np.testing.assert_array_equal(got_rows, rows)
    assert version == 0 and state.row_count() == 6
    assert got_dense.keys() == dense.keys()
    for name, layer in dense.items():
        np.testing.assert_array_equal(got_dense[name], layer)


def test_snapshot_reads_the_rows_asked_for_all_layers_and_the_version(subject: Subject) -> None:
    state = subject.state
    rows, dense = model()
    state.initialise(rows, dense)
    got, layers, version = state.snapshot([4, 0, 99], DIM)  # 99: no such row, zeros
    np.testing.assert_array_equal(got, np.stack([rows[4], rows[0], np.zeros(DIM)]))
    assert got.dtype == np.float32 and version == 0
    assert {n: a.shape for n, a in layers.items()} == {"w": (2, 3), "b": (3,)}
    empty, _, _ = state.snapshot([], DIM)
    assert empty.shape == (0, DIM)


def test_devices_and_rounds(subject: Subject) -> None:
    state = subject.state
    assert state.current_round() is None and state.devices() == []
    for d in ("d2", "d1", "d2"):
        state.register(d)
    assert state.devices() == ["d1", "d2"]
    first = a_round("r-1", ("d1", "d2"))
    state.open_round(first)
    assert state.current_round() == first
    second = a_round("r-2", ("d2",))
    state.open_round(second)  # replaces the round, its selection too
    assert state.current_round() == second


def test_push_outcomes(subject: Subject) -> None:
    state = subject.state
    rnd = started(state)
    outcome, first = state.push("u-1", rnd.round_id, "d1", b"one")
    assert outcome == "accepted" and first
    assert state.push("u-1", rnd.round_id, "d1", b"one") == ("duplicate", first)
    outcome, second = state.push("u-2", rnd.round_id, "d2", b"two")
    assert outcome == "accepted" and second != first
    assert state.push("u-3", rnd.round_id, "d3", b"x")[0] == "not_selected"
    assert state.push("u-4", "r-other", "d1", b"x")[0] == "closed"
    streamed = [e.update_id for e in state.read(GROUP, "c1", pending=False, block_ms=10)]
    assert streamed == ["u-1", "u-2"]  # only the accepted pushes reached the stream

    state.finish_round(GROUP, rnd.round_id, [], "aborted")
    assert state.push("u-5", rnd.round_id, "d1", b"x")[0] == "closed"
    assert state.push("u-1", rnd.round_id, "d1", b"one")[0] == "closed"  # closed before dup

    late = a_round("r-late", deadline_s=-1.0)
    state.open_round(late)
    assert state.push("u-6", late.round_id, "d1", b"x")[0] == "late"


def test_one_update_per_device_per_round(subject: Subject) -> None:
    state = subject.state
    rnd = started(state)
    outcome, first = state.push("u-1", rnd.round_id, "d1", b"one")
    assert outcome == "accepted"
    assert state.push("u-9", rnd.round_id, "d1", b"another") == ("already_pushed", "")
    assert state.push("u-1", rnd.round_id, "d1", b"one") == ("duplicate", first)  # a retry
    assert state.push("u-2", rnd.round_id, "d2", b"two")[0] == "accepted"  # others unaffected
    streamed = state.read(GROUP, "c1", pending=False, block_ms=10)
    assert [(e.update_id, e.payload) for e in streamed] == [("u-1", b"one"), ("u-2", b"two")]
    assert state.push("u-10", "r-other", "d1", b"x")[0] == "closed"  # closed before the rest

    state.open_round(a_round("r-2"))  # a new round: the device may push again
    assert state.push("u-3", "r-2", "d1", b"three")[0] == "accepted"
    assert state.push("u-4", "r-2", "d1", b"four")[0] == "already_pushed"


def test_a_round_that_would_make_the_model_non_finite_changes_nothing(subject: Subject) -> None:
    state = subject.state
    rnd = started(state)
    _, entry = state.push("u-1", rnd.round_id, "d1", b"x")
    state.read(GROUP, "agg", pending=False, block_ms=10)
    state.finish_round(
        GROUP, rnd.round_id, [entry], "applied", np.array([2]), np.full((1, DIM), 3e38, np.float32)
    )  # the row is now ~3e38: finite, so applied
    state.open_round(a_round("r-2"))
    _, entry = state.push("u-2", "r-2", "d1", b"x")
    state.read(GROUP, "agg", pending=False, block_ms=10)
    before = state.snapshot(range(6), DIM)
    for rows, dense in (
        (np.full((1, DIM), 3e38, np.float32), {}),  # 6e38 overflows float32
        (np.zeros((1, DIM), np.float32), {"w": np.full((2, 3), np.inf, np.float32)}),
        (np.full((1, DIM), np.nan, np.float32), {}),
    ):
        with pytest.raises(NonFiniteModel):
            state.finish_round(GROUP, "r-2", [entry], "applied", np.array([2]), rows, dense)
        after = state.snapshot(range(6), DIM)
        np.testing.assert_array_equal(after[0], before[0])
        for name in before[1]:
            np.testing.assert_array_equal(after[1][name], before[1][name])
        assert after[2] == before[2] == 1
    current = state.current_round()
    assert current is not None and current.state == "open"  # the caller decides: abandon it
    assert [e.entry_id for e in state.read(GROUP, "agg", pending=True, block_ms=0)] == [entry]
    assert state.finish_round(GROUP, "r-2", [entry], "aborted") == 1


def test_fedlaavg_memory_changes_only_with_an_applied_round(subject: Subject) -> None:
    state = subject.state
    rnd = started(state)
    assert state.latest_updates() == {}
    one = (np.array([1]), np.zeros((1, DIM), np.float32))
    state.finish_round(GROUP, rnd.round_id, [], "applied", *one, remember={"d1": b"a", "d2": b"b"})
    assert state.latest_updates() == {"d1": (1, b"a"), "d2": (1, b"b")}
    state.open_round(a_round("r-2"))
    state.finish_round(GROUP, "r-2", [], "aborted", remember={"d3": b"c"}, forget=["d1"])
    assert state.latest_updates() == {"d1": (1, b"a"), "d2": (1, b"b")}  # aborted: as it was
    state.open_round(a_round("r-3"))
    with pytest.raises(NonFiniteModel):  # a refused apply changes the memory neither
        state.finish_round(
            GROUP, "r-3", [], "applied", np.array([1]), np.full((1, DIM), np.inf, np.float32),
            remember={"d3": b"c"}, forget=["d1"],
        )  # fmt: skip
    assert state.latest_updates() == {"d1": (1, b"a"), "d2": (1, b"b")}
    state.finish_round(GROUP, "r-3", [], "applied", *one, remember={"d2": b"B"}, forget=["d1"])
    assert state.latest_updates() == {"d2": (2, b"B")}


def test_the_deadline_passes_with_time(subject: Subject) -> None:
    state = subject.state
    rnd = started(state, a_round(deadline_s=0.3))
    assert state.push("u-1", rnd.round_id, "d1", b"x")[0] == "accepted"
    subject.advance(0.4)
    assert state.push("u-2", rnd.round_id, "d2", b"x")[0] == "late"


def test_read_delivers_each_entry_once_and_keeps_it_pending_until_acked(
    subject: Subject,
) -> None:
    state = subject.state
    state.initialise(*model())
    state.register("d1")
    rnd = a_round(selected=("d1", "d2", "d3", "d4"))
    state.open_round(rnd)
    _, early = state.push("u-0", rnd.round_id, "d1", b"before the group")
    state.ensure_group(GROUP)
    state.ensure_group(GROUP)  # idempotent
    ids = [early] + [state.push(f"u-{i}", rnd.round_id, f"d{i + 1}", b"p%d" % i)[1] for i in (1, 2)]

    got = state.read(GROUP, "c1", pending=False, block_ms=10)
    assert [e.entry_id for e in got] == ids  # from the stream's start, in order
    assert got[0].round_id == rnd.round_id and got[0].update_id == "u-0"
    assert [e.payload for e in got] == [b"before the group", b"p1", b"p2"]
    assert state.read(GROUP, "c2", pending=False, block_ms=10) == []  # delivered once
    assert state.read(GROUP, "c1", pending=False, block_ms=10) == []
    assert [e.entry_id for e in state.read(GROUP, "c1", pending=True, block_ms=0)] == ids
    assert state.read(GROUP, "c2", pending=True, block_ms=0) == []

    state.ack(GROUP, [ids[1]])
    assert [e.entry_id for e in state.read(GROUP, "c1", pending=True, block_ms=0)] == [
        ids[0], ids[2],
    ]  # fmt: skip
    _, later = state.push("u-9", rnd.round_id, "d4", b"later")
    assert [e.entry_id for e in state.read(GROUP, "c2", pending=False, block_ms=10)] == [later]
    assert len(state.read(GROUP, "c1", pending=True, block_ms=0)) == 2


def test_a_blocked_read_returns_when_a_push_arrives(subject: Subject) -> None:
    state = subject.state
    rnd = started(state)
    pusher = threading.Timer(0.1, state.push, ("u-1", rnd.round_id, "d1", b"x"))
    pusher.start()
    begun = time.monotonic()
    got = state.read(GROUP, "c1", pending=False, block_ms=5000)
    pusher.join()
    assert [e.update_id for e in got] == ["u-1"]
    assert time.monotonic() - begun < 4


def test_claim_takes_over_the_pending_entries_of_a_dead_consumer(subject: Subject) -> None:
    state = subject.state
    rnd = started(state)
    ids = [state.push(f"u-{d}", rnd.round_id, d, b"x")[1] for d in ("d1", "d2")]
    assert len(state.read(GROUP, "dead", pending=False, block_ms=10)) == 2  # then it dies
    state.claim_pending(GROUP, "heir")
    assert [e.entry_id for e in state.read(GROUP, "heir", pending=True, block_ms=0)] == ids
    assert state.read(GROUP, "dead", pending=True, block_ms=0) == []
    state.claim_pending(GROUP, "heir")  # nothing left elsewhere: a no-op
    assert len(state.read(GROUP, "heir", pending=True, block_ms=0)) == 2


def test_an_applied_round_changes_the_model_at_once(subject: Subject) -> None:
    state = subject.state
    rnd = started(state)
    rows, dense = model()
    ids = [state.push(f"u-{d}", rnd.round_id, d, b"x")[1] for d in ("d1", "d2")]
    state.read(GROUP, "agg", pending=False, block_ms=10)
    row_ids, row_delta = np.array([1, 4]), np.full((2, DIM), 0.5, np.float32)
    dense_delta = {"w": np.full((2, 3), 2.0, np.float32)}
    version = state.finish_round(
        GROUP, rnd.round_id, ids, "applied", row_ids, row_delta, dense_delta
    )
    assert version == 1 == state.version()
    got, layers, snap_version = state.snapshot(range(6), DIM)
    want = rows.copy()
    want[[1, 4]] += 0.5
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(layers["w"], dense["w"] + 2.0, rtol=1e-6)
    np.testing.assert_array_equal(layers["b"], dense["b"])  # no delta, unchanged
    assert snap_version == 1
    current = state.current_round()
    assert current is not None and current.state == "applied"
    assert state.read(GROUP, "agg", pending=True, block_ms=0) == []  # acked with the round
    assert state.read(GROUP, "other", pending=False, block_ms=10) == []
    assert state.push("u-d1", rnd.round_id, "d1", b"x")[0] == "closed"


def test_an_aborted_round_leaves_the_model_as_it_was(subject: Subject) -> None:
    state = subject.state
    rnd = started(state)
    before = state.snapshot(range(6), DIM)
    _, entry = state.push("u-1", rnd.round_id, "d1", b"x")
    state.read(GROUP, "agg", pending=False, block_ms=10)
    assert state.finish_round(GROUP, rnd.round_id, [entry], "aborted") == 0
    after = state.snapshot(range(6), DIM)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1].keys() == before[1].keys()
    for name in before[1]:
        np.testing.assert_array_equal(after[1][name], before[1][name])
    assert after[2] == before[2] == state.version() == 0
    current = state.current_round()
    assert current is not None and current.state == "aborted"
    assert state.read(GROUP, "agg", pending=True, block_ms=0) == []


def test_finishing_a_replaced_round_is_refused_and_changes_nothing(subject: Subject) -> None:
    state = subject.state
    old = started(state)
    _, entry = state.push("u-1", old.round_id, "d1", b"x")
    state.read(GROUP, "agg", pending=False, block_ms=10)
    state.open_round(a_round("r-2"))
    with pytest.raises(RoundNotCurrent):
        state.finish_round(
            GROUP, old.round_id, [entry], "applied", np.array([0]), np.ones((1, DIM))
        )
    assert state.version() == 0
    current = state.current_round()
    assert current is not None and current.round_id == "r-2" and current.state == "open"
    assert [e.entry_id for e in state.read(GROUP, "agg", pending=True, block_ms=0)] == [entry]


def test_the_lease_has_one_holder_until_it_lapses(subject: Subject) -> None:
    state = subject.state
    assert state.hold_lease("a", 400)
    assert not state.hold_lease("b", 400)
    subject.advance(0.25)
    assert state.hold_lease("a", 400)  # renewed: runs 400 ms from now
    subject.advance(0.25)
    assert not state.hold_lease("b", 400)  # past the first term, inside the renewed one
    subject.advance(0.3)
    assert state.hold_lease("b", 400)  # a stopped renewing: b takes over
    assert not state.hold_lease("a", 400)


def test_signals_are_kept_per_version_and_the_nearest_one_below_is_answered(
    subject: Subject,
) -> None:
    state = subject.state
    assert state.get_signal(5) is None
    state.put_signal(2, b"at-2")
    assert state.get_signal(5) == (2, b"at-2")
    assert state.get_signal(1) == (2, b"at-2")  # none at or below: the oldest above
    state.put_signal(4, b"at-4")
    state.put_signal(2, b"at-2 again")  # the same version replaces
    assert state.get_signal(3) == (2, b"at-2 again")
    assert state.get_signal(4) == state.get_signal(9) == (4, b"at-4")
    state.put_signal(6, b"at-6")
    state.put_signal(8, b"at-8")  # SIGNALS_KEPT (3) newest kept: 2 is dropped
    assert state.get_signal(3) == (4, b"at-4")
    assert state.get_signal(7) == (6, b"at-6")
    assert state.get_signal(100) == (8, b"at-8")


def test_contributions_are_kept_newest_first_and_capped(subject: Subject) -> None:
    state = subject.state
    assert state.contributions(5) == []
    first = RoundContributions(
        "r-1", "applied", 3, 2, "fisher", {"d1": 0.5, "d2": -1.25, "d3": math.nan}, ("d2",), 7
    )
    state.record_contributions(first)
    got = state.contributions(5)
    assert len(got) == 1 and got[0].scores["d1"] == 0.5 and math.isnan(got[0].scores["d3"])
    assert (got[0].round_id, got[0].excluded, got[0].mode, got[0].signal_version) == (
        "r-1", ("d2",), "fisher", 2,
    )  # fmt: skip
    for k in range(2, CONTRIBUTIONS_KEPT + 3):
        state.record_contributions(RoundContributions(f"r-{k}", "aborted", k, 2, "first_order", {}))
    latest = state.contributions(CONTRIBUTIONS_KEPT + 10)
    assert len(latest) == CONTRIBUTIONS_KEPT
    newest = CONTRIBUTIONS_KEPT + 2
    assert [r.round_id for r in latest[:2]] == [f"r-{newest}", f"r-{newest - 1}"]
    assert state.contributions(0) == []
