"""The aggregator loop and the parameter server over the in-memory federated state, no Redis."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from cloud_service.auth import DeviceAuth
from cloud_service.federated.aggregate import fedsubavg
from cloud_service.federated.aggregator import GROUP, Aggregator
from cloud_service.federated.contribution import ContributionRule, ValidationSignal, encode_signal
from cloud_service.federated.defences import Defences
from cloud_service.federated.rounds import RoundConfig
from cloud_service.services.federated import FederatedService
from cloud_service.store.federated_memory import MemoryFederatedState
from cloud_service.store.federated_state import FederatedState
from tandem_core.federated.update import ModelUpdate, encode

pytestmark = pytest.mark.unit
N_ITEMS, DIM = 10, 3
DEVICES = ["m-0", "m-1", "m-2"]
CFG = RoundConfig(devices_per_round=3, over_select=0.0, quorum_share=1.0, duration_s=30)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def server(state: FederatedState) -> tuple[FederatedService, DeviceAuth]:
    rng = np.random.default_rng(0)
    state.initialise(
        rng.normal(size=(N_ITEMS, DIM)).astype(np.float32), {"w": np.zeros((2, 2), np.float32)}
    )
    auth = DeviceAuth(b"a test secret of 32 bytes......")
    return FederatedService(auth, state, N_ITEMS, DIM, {"w": (2, 2)}, CFG), auth


def aggregator(state: FederatedState, name: str, cfg: RoundConfig = CFG) -> Aggregator:
    return Aggregator(state, cfg, DIM, Defences(), name, rng=np.random.default_rng(0))


def push_all(service: FederatedService, auth: DeviceAuth) -> list[ModelUpdate]:
    """Every device checks the round and pushes a delta to rows of its own."""
    pushed = []
    for i, device in enumerate(DEVICES):
        sub = service.pull(device, "", [], auth.token_for(device))
        assert sub.round is not None and sub.selected
        update = ModelUpdate(
            device, np.array([i, 9]), np.full((2, DIM), float(i + 1), np.float32),
            np.array([1, 2]), {"w": np.full((2, 2), 0.1 * (i + 1), np.float32)}, 2,
            round_id=sub.round.round_id, update_id=f"{device}-u", base_version=sub.version,
        )  # fmt: skip
        receipt = service.push(update, auth.token_for(device))
        assert receipt.accepted and receipt.reason == "accepted"
        pushed.append(update)
    return pushed


def test_a_round_opens_collects_pushes_and_is_applied() -> None:
    state = MemoryFederatedState()
    service, auth = server(state)
    for device in DEVICES:
        service.pull(device, "", [], auth.token_for(device))  # check in
    agg, standby = aggregator(state, "agg-a"), aggregator(state, "agg-b")
    assert agg.step(block_ms=10) is None  # took the lease, opened the round
    assert standby.step(block_ms=1) is None and standby.rounds == 0  # no lease, nothing done
    before, dense_before, _ = state.snapshot(range(N_ITEMS), DIM)
    pushed = push_all(service, auth)

    assert agg.step(block_ms=10) == "applied"  # everyone answered
    rows, dense, version = state.snapshot(range(N_ITEMS), DIM)
    ids, delta = fedsubavg(pushed, DIM)
    np.testing.assert_allclose(rows[ids], before[ids] + delta, rtol=1e-6)
    untouched = np.setdiff1d(np.arange(N_ITEMS), ids)
    np.testing.assert_array_equal(rows[untouched], before[untouched])
    np.testing.assert_allclose(dense["w"], dense_before["w"] + 0.2, rtol=1e-6)  # mean of .1-.3
    assert version == 1 and agg.rounds == 1
    assert state.read(GROUP, "agg-a", pending=True, block_ms=0) == []


def test_a_standby_takes_over_the_pushes_a_dead_leader_had_read() -> None:
    clock = Clock()  # the lease's; round deadlines (30 s) stay far off
    state = MemoryFederatedState(clock)
    service, auth = server(state)
    for device in DEVICES:
        service.pull(device, "", [], auth.token_for(device))
    leader, standby = aggregator(state, "agg-a"), aggregator(state, "agg-b")
    leader.step(block_ms=10)
    before, _, _ = state.snapshot(range(N_ITEMS), DIM)
    pushed = push_all(service, auth)
    assert len(state.read(GROUP, "agg-a", pending=False, block_ms=10)) == 3  # read; then killed
    assert standby.step(block_ms=1) is None  # the dead leader's lease still runs
    clock.now += standby.lease_ms / 1000 + 0.1

    assert standby.step(block_ms=10) == "applied"  # from the entries it claimed
    rows, _, version = state.snapshot(range(N_ITEMS), DIM)
    ids, delta = fedsubavg(pushed, DIM)
    np.testing.assert_allclose(rows[ids], before[ids] + delta, rtol=1e-6)
    assert version == 1
    assert state.read(GROUP, "agg-a", pending=True, block_ms=0) == []


def test_a_round_that_would_overflow_the_model_is_abandoned_and_honest_rounds_go_on() -> None:
    """The aggregator's last check: pushes that got past validation (written straight into the
    state here, as a replica without the norm bound would) cannot make the model non-finite."""
    state = MemoryFederatedState()
    service, auth = server(state)
    for device in DEVICES:
        service.pull(device, "", [], auth.token_for(device))
    agg = aggregator(state, "agg-a")

    def huge_round() -> str | None:
        agg.step(block_ms=10)
        rnd = state.current_round()
        assert rnd is not None and rnd.state == "open"
        for device in DEVICES:
            u = ModelUpdate(
                device, np.array([0]), np.full((1, DIM), 3e38, np.float32), np.array([1]), {},
                1, round_id=rnd.round_id, update_id=f"{device}-{rnd.round_id}",
                base_version=rnd.base_version,
            )  # fmt: skip
            state.push(u.update_id, rnd.round_id, device, encode(u))
        return agg.step(block_ms=10)

    assert huge_round() == "applied"  # row 0 is now ~3e38: still finite
    before = state.snapshot(range(N_ITEMS), DIM)
    assert huge_round() == "aborted"  # 6e38 would overflow float32
    after = state.snapshot(range(N_ITEMS), DIM)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1]["w"], before[1]["w"])
    assert after[2] == before[2] == 1
    assert state.read(GROUP, "agg-a", pending=True, block_ms=0) == []  # its pushes are gone

    agg.step(block_ms=10)  # the next round: honest pushes are accepted and applied
    push_all(service, auth)
    assert agg.step(block_ms=10) == "applied" and state.version() == 2


def test_fedlaavg_memory_lives_in_the_state_and_forgets_after_the_staleness_bound() -> None:
    """One device a round (most outdated first), each pushing its own row; a remembered update
    is reused for `latest_max_age` = 1 round, then forgotten. A standby that takes over for
    round 3 continues the memory the dead leader wrote into the state."""
    clock = Clock()
    state = MemoryFederatedState(clock)
    service, auth = server(state)
    cfg = RoundConfig(devices_per_round=1, over_select=0.0, quorum_share=1.0, latest_max_age=1)
    leader = Aggregator(state, cfg, DIM, Defences("fedlaavg"), "agg-a")
    standby = Aggregator(state, cfg, DIM, Defences("fedlaavg"), "agg-b")
    for device in DEVICES:
        service.pull(device, "", [], auth.token_for(device))
    start, _, _ = state.snapshot(range(N_ITEMS), DIM)
    moved = []
    for n, agg in enumerate([leader, leader, standby]):
        if agg is standby:
            clock.now += leader.lease_ms / 1000 + 0.1  # the leader died after round 2
        agg.step(block_ms=10)
        rnd = state.current_round()
        assert rnd is not None and rnd.state == "open" and len(rnd.selected) == 1
        device = next(iter(rnd.selected))
        assert device == DEVICES[n]  # never pushed first, in id order
        update = ModelUpdate(
            device, np.array([n]), np.full((1, DIM), 0.1 * (n + 1), np.float32), np.array([1]),
            {}, 1, round_id=rnd.round_id, update_id=f"{device}-u", base_version=state.version(),
        )  # fmt: skip
        before, _, _ = state.snapshot(range(N_ITEMS), DIM)
        assert service.push(update, auth.token_for(device)).accepted
        assert agg.step(block_ms=10) == "applied"
        after, _, _ = state.snapshot(range(N_ITEMS), DIM)
        moved.append((after - before)[:3, 0])
    np.testing.assert_allclose(moved[0], [0.1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(moved[1], [0.1, 0.2, 0], atol=1e-6)  # m-0 reused once
    np.testing.assert_allclose(moved[2], [0, 0.2, 0.3], atol=1e-6)  # m-0 forgotten; m-1 kept
    np.testing.assert_array_equal(
        state.snapshot(range(N_ITEMS), DIM)[0][3:], start[3:]
    )  # fmt: skip
    assert {d: v for d, (v, _) in state.latest_updates().items()} == {"m-1": 2, "m-2": 3}


@pytest.mark.parametrize("fits", [True, False])
def test_contribution_exclusion_uses_a_fitting_signal_and_ignores_one_that_does_not(
    fits: bool,
) -> None:
    """The signal's gradient favours device m-0's step on row 0: with exclusion on, the lowest
    (m-2, the largest step up the gradient on row 9) is left out; a signal of another row width
    (a different model) is ignored: every update applied, nothing recorded."""
    state = MemoryFederatedState()
    service, auth = server(state)
    width = DIM if fits else DIM + 1
    grad = np.zeros((2, width))
    grad[0], grad[1] = -1.0, 1.0  # rows 0 and 9: down on 0 helps, up on 9 hurts
    sig = ValidationSignal(0, np.array([0, 9]), grad, np.ones((2, width)), damping=0.1)
    state.put_signal(0, encode_signal(sig))
    for device in DEVICES:
        service.pull(device, "", [], auth.token_for(device))
    agg = aggregator(state, "agg-a", replace(CFG, quorum_share=0.6))  # quorum 2 of 3
    agg.contribution = ContributionRule("first_order", 0.34)  # ⌊0.34 × 3⌋ = 1
    agg.step(block_ms=10)
    before, _, _ = state.snapshot(range(N_ITEMS), DIM)
    pushed = push_all(service, auth)
    assert agg.step(block_ms=10) == "applied"
    rows, _, _ = state.snapshot(range(N_ITEMS), DIM)
    applied = pushed[:2] if fits else pushed
    ids, delta = fedsubavg(applied, DIM)
    np.testing.assert_allclose(rows[ids], before[ids] + delta, rtol=1e-6)
    records = state.contributions(5)
    if not fits:
        assert records == []
        return
    [record] = records
    # m-i pushes i+1 on rows i and 9: score −(−(i+1)·DIM·[i == 0] + (i+1)·DIM)
    assert record.scores == pytest.approx({"m-0": 0.0, "m-1": -2.0 * DIM, "m-2": -3.0 * DIM})
    assert record.excluded == ("m-2",) and record.state == "applied"


@pytest.mark.parametrize("signal", [b"not an npz", None])
def test_exclusion_keeps_the_quorum_and_a_corrupt_signal_never_stops_a_round(
    signal: bytes | None,
) -> None:
    """Quorum 3 of 3: exclusion (share 0.34) may leave out nobody; a corrupt stored signal
    (or none) scores nothing and the round is applied with every update."""
    state = MemoryFederatedState()
    service, auth = server(state)
    if signal is None:  # a fitting signal: scores recorded, but the quorum forbids leaving out
        grad = np.zeros((2, DIM))
        grad[0], grad[1] = -1.0, 1.0
        signal = encode_signal(
            ValidationSignal(0, np.array([0, 9]), grad, np.ones((2, DIM)), damping=0.1)
        )
    state.put_signal(0, signal)
    for device in DEVICES:
        service.pull(device, "", [], auth.token_for(device))
    agg = aggregator(state, "agg-a")
    agg.contribution = ContributionRule("first_order", 0.34)
    agg.step(block_ms=10)
    before, _, _ = state.snapshot(range(N_ITEMS), DIM)
    pushed = push_all(service, auth)
    assert agg.step(block_ms=10) == "applied"
    rows, _, _ = state.snapshot(range(N_ITEMS), DIM)
    ids, delta = fedsubavg(pushed, DIM)
    np.testing.assert_allclose(rows[ids], before[ids] + delta, rtol=1e-6)
    records = state.contributions(5)
    assert all(r.excluded == () for r in records)
    assert len(records) == (0 if signal == b"not an npz" else 1)
