"""Secure aggregation over the real gRPC service and Redis: exact sums, dropouts, abort, rules."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import redis

from cloud_service.build import build_round_config
from cloud_service.federated.aggregate import fedavg_dense, fedsubavg
from cloud_service.federated.aggregator import Aggregator
from cloud_service.federated.defences import Defences
from cloud_service.federated.secure_rounds import SecureConfig, SecureRounds
from cloud_service.server import CloudServer
from cloud_service.services.container import CloudServices
from cloud_service.store.secagg_redis import SecAggRedis
from device_agent.cloud_client import CloudClient
from device_agent.ports import CloudError
from protos.tandem.v1 import tandem_pb2 as pb
from tandem_core.federated import secure_update
from tandem_core.federated.secagg import (
    KeyAdvert,
    MaskedInput,
    SecAggClient,
    SecAggParams,
    UnmaskShares,
)
from tandem_core.federated.secagg.shamir import PRIME
from tandem_core.federated.update import ModelUpdate
from tests.integration.conftest import StartCloud

pytestmark = pytest.mark.integration
N = 5
FL = {"fl_devices_per_round": N, "fl_over_select": 0.0, "fl_quorum_share": 0.6, "fl_round_s": 30}
PHASE_S = 30.0  # long: the test moves the phases by answering, or by passing the deadline


def setup(start_cloud: StartCloud) -> tuple[CloudServer, CloudServices, Aggregator, CloudClient]:
    server, services = start_cloud(**FL)
    fed = services.federated
    assert fed is not None and fed.secure is not None
    secagg = fed.secure.secagg
    assert isinstance(secagg, SecAggRedis)
    secure = SecureRounds(
        secagg, fed.store, SecureConfig(phase_s=PHASE_S), fed.dim, fed.dense_shapes
    )
    agg = Aggregator(
        fed.store, build_round_config(services.settings.federated), fed.dim, Defences(),
        "agg-secure", rng=np.random.default_rng(0), secure=secure,
    )  # fmt: skip
    client = CloudClient(f"127.0.0.1:{server.grpc_port}", 5.0, services.auth.token_for)
    return server, services, agg, client


class Device:
    """One phone running the protocol by hand, with an update the test chose."""

    def __init__(self, cloud: CloudClient, device_id: str, rng: np.random.Generator) -> None:
        self.cloud, self.id, self.rng = cloud, device_id, rng

    def join(self, ids: list[int], dim: int) -> None:
        sub = self.cloud.pull_submodel(self.id, "", [], 5)
        assert sub.secure is not None and sub.selected
        self.params, self.round_id = sub.secure, sub.round_id
        pulled = self.cloud.pull_submodel(self.id, self.round_id, ids, 5)
        self.held = np.sort(pulled.item_ids)
        counts = self.rng.integers(0, 4, size=len(ids))
        deltas = self.rng.normal(0, 0.05, size=(len(ids), dim)).astype(np.float32)
        deltas[counts == 0] = 0  # a decoy: zero delta, zero count
        dense = {n: self.rng.normal(0, 0.01, a.shape).astype(np.float32)
                 for n, a in pulled.dense.items()}  # fmt: skip
        self.update = ModelUpdate(
            self.id, self.held, deltas, counts, dense, num_samples=int(counts.max()) + 1,
            round_id=self.round_id, base_version=pulled.base_version,
        )  # fmt: skip
        shapes = {n: a.shape for n, a in dense.items()}
        self.rows, self.dense = secure_update.encode(self.update, shapes, self.params, self.rng)
        p = self.params
        self.client = SecAggClient(
            self.id, SecAggParams(self.round_id, p.threshold, p.row_width, p.dense_len), self.rng
        )
        reply = self.cloud.secure_aggregate(self.id, self.round_id, self.client.advertise(), 5)
        assert reply.accepted, reply.reason

    def poll(self) -> str:
        return self.cloud.secure_aggregate(self.id, self.round_id, None, 5).phase

    def share(self) -> None:
        reply = self.cloud.secure_aggregate(self.id, self.round_id, None, 5)
        assert reply.phase == "shares"
        out = self.cloud.secure_aggregate(
            self.id, self.round_id, self.client.share_keys(reply.roster), 5
        )
        assert out.accepted, out.reason

    def mask(self) -> np.ndarray:
        reply = self.cloud.secure_aggregate(self.id, self.round_id, None, 5)
        assert reply.phase == "masked"
        masked = self.client.masked_input(
            self.rows, self.held, self.dense, reply.inbox, reply.intersections
        )
        out = self.cloud.secure_aggregate(
            self.id, self.round_id, masked, 5, self.params.base_version
        )
        assert out.accepted, out.reason
        return masked.rows

    def unmask(self) -> None:
        reply = self.cloud.secure_aggregate(self.id, self.round_id, None, 5)
        assert reply.phase == "unmask"
        out = self.cloud.secure_aggregate(
            self.id, self.round_id, self.client.unmask(reply.survivors, reply.dropped), 5
        )
        assert out.accepted, out.reason


def start_round(agg: Aggregator, cloud: CloudClient, n: int, dim: int) -> list[Device]:
    rng = np.random.default_rng(7)
    devices = [Device(cloud, f"sa-{i}", rng) for i in range(n)]
    for d in devices:
        cloud.pull_submodel(d.id, "", [], 5)  # check in (registers)
    agg.step(block_ms=10)  # opens the round
    for d in devices:
        ids = sorted(set(rng.choice(40, size=12, replace=False).tolist()))
        d.join(ids, dim)
    return devices


def rows_of(cloud: CloudClient, ids: list[int]) -> np.ndarray:
    return cloud.pull_submodel("sa-reader", "", ids, 5).rows


def expected(devices: list[Device], dim: int) -> tuple[np.ndarray, np.ndarray, dict]:
    ups = [d.update for d in devices]
    ids, delta = fedsubavg(ups, dim)
    return ids, delta, fedavg_dense(ups)


def run_to_unmask(agg: Aggregator, devices: list[Device], drop_before_mask: int = 0) -> None:
    assert agg.step(block_ms=10) is None  # everyone advertised: shares phase
    for d in devices:
        d.share()
    assert agg.step(block_ms=10) is None  # masked phase
    for d in devices[drop_before_mask:]:
        d.mask()


def pass_deadline(services: CloudServices, agg: Aggregator, round_id: str) -> None:
    """Move the current phase's deadline into the past (as if its wait had run out)."""
    assert agg.secure is not None
    state = agg.secure.secagg
    phase = state.phase(round_id)
    assert phase is not None
    assert state.advance(phase.phase, replace(phase, deadline_ms=int(time.time() * 1000) - 1))


def test_secure_round_applies_fedsubavg_of_the_cohort_within_quantisation(
    start_cloud: StartCloud,
) -> None:
    _, services, agg, cloud = setup(start_cloud)
    fed = services.federated
    assert fed is not None
    devices = start_round(agg, cloud, N, fed.dim)
    before = rows_of(cloud, list(range(40)))
    _, dense_before, _ = fed.store.snapshot([], fed.dim)
    run_to_unmask(agg, devices)
    assert agg.step(block_ms=10) is None  # unmask phase
    for d in devices:
        d.unmask()
    assert agg.step(block_ms=10) == "applied"
    ids, delta, dense_step = expected(devices, fed.dim)
    _, dense_after, _ = fed.store.snapshot([], fed.dim)
    # the layers: Σ w·δ / Σ w, each coordinate within n / scale of the dense quantiser (÷ Σ w)
    weight = sum(d.update.num_samples for d in devices)
    dq = devices[0].params.dense_quantiser()
    for name, step in dense_step.items():
        np.testing.assert_allclose(dense_after[name] - dense_before[name], step,
                                   atol=N / dq.scale / weight + 1e-6, rtol=0)  # fmt: skip
    after = rows_of(cloud, list(range(40)))
    moved = after[ids] - before[ids]
    # per coordinate: counts are exact, Σ c·δ within n / scale of the quantiser
    q = devices[0].params.row_quantiser()
    tol = N / q.scale
    np.testing.assert_allclose(moved, delta, atol=tol, rtol=0)
    untouched = np.setdiff1d(np.arange(40), ids)
    np.testing.assert_array_equal(after[untouched], before[untouched])
    assert all(d.poll() == "done" for d in devices)


def test_dropouts_up_to_the_tolerance_still_sum_the_survivors(start_cloud: StartCloud) -> None:
    _, services, agg, cloud = setup(start_cloud)
    fed = services.federated
    assert fed is not None
    devices = start_round(agg, cloud, N, fed.dim)
    t = devices[0].params.threshold
    assert t == 3  # 5 selected: more than half, and the quorum (0.6 × 5)
    before = rows_of(cloud, list(range(40)))
    gone = N - t  # these shared keys but never send a masked input
    run_to_unmask(agg, devices, drop_before_mask=gone)
    round_id = devices[0].round_id
    pass_deadline(services, agg, round_id)
    assert agg.step(block_ms=10) is None  # unmask phase, the dropped named
    for d in devices[gone:]:
        d.unmask()
    assert agg.step(block_ms=10) == "applied"
    ids, delta, _ = expected(devices[gone:], fed.dim)
    after = rows_of(cloud, list(range(40)))
    tol = t / devices[0].params.row_quantiser().scale
    np.testing.assert_allclose(after[ids] - before[ids], delta, atol=tol, rtol=0)


def test_one_dropout_beyond_the_tolerance_aborts_and_leaves_the_model(
    start_cloud: StartCloud,
) -> None:
    _, services, agg, cloud = setup(start_cloud)
    fed = services.federated
    assert fed is not None
    devices = start_round(agg, cloud, N, fed.dim)
    t = devices[0].params.threshold
    before = rows_of(cloud, list(range(40)))
    version = fed.store.version()
    run_to_unmask(agg, devices, drop_before_mask=N - t + 1)
    pass_deadline(services, agg, devices[0].round_id)
    assert agg.step(block_ms=10) == "aborted"
    np.testing.assert_array_equal(rows_of(cloud, list(range(40))), before)
    assert fed.store.version() == version
    assert all(d.poll() == "aborted" for d in devices)


def test_masked_rounds_keep_the_push_rules(start_cloud: StartCloud) -> None:
    _, services, agg, cloud = setup(start_cloud)
    fed = services.federated
    assert fed is not None
    devices = start_round(agg, cloud, N, fed.dim)
    d = devices[0]
    # a plain push into a secure round is refused, nothing stored
    plain = ModelUpdate(d.id, d.held, np.zeros((len(d.held), fed.dim), np.float32),
                        np.ones(len(d.held), np.int64), round_id=d.round_id,
                        base_version=d.params.base_version, update_id="plain-1")  # fmt: skip
    assert cloud.push_update(plain, 5) == (False, "secure_round")
    # advertising again with other keys: one message per device and stage
    other = SecAggClient(d.id, SecAggParams(d.round_id, d.params.threshold, d.params.row_width,
                                            d.params.dense_len))  # fmt: skip
    with pytest.raises(Exception, match="already stored"):
        cloud.secure_aggregate(d.id, d.round_id, other.advertise(), 5)
    # a device that was not selected cannot join
    outsider = cloud.secure_aggregate("sa-outsider", d.round_id, other.advertise(), 5)
    assert not outsider.accepted
    # pulling another set after joining is refused
    with pytest.raises(Exception, match="another id set"):
        cloud.pull_submodel(d.id, d.round_id, [int(d.held[0])], 5)
    # a masked input of the wrong shape is INVALID_ARGUMENT
    assert agg.step(block_ms=10) is None
    for x in devices:
        x.share()
    assert agg.step(block_ms=10) is None
    reply = cloud.secure_aggregate(d.id, d.round_id, None, 5)
    masked = d.client.masked_input(d.rows, d.held, d.dense, reply.inbox, reply.intersections)
    short = MaskedInput(d.id, masked.rows[:-1], masked.dense)
    with pytest.raises(Exception, match="masked rows must be"):
        cloud.secure_aggregate(d.id, d.round_id, short, 5, d.params.base_version)
    with pytest.raises(Exception, match="trained on version"):
        cloud.secure_aggregate(d.id, d.round_id, masked, 5, d.params.base_version + 1)


def test_the_server_stores_no_device_update(start_cloud: StartCloud, redis_url: str) -> None:
    """During the round Redis holds masked inputs only; after it, nothing of the round."""
    _, services, agg, cloud = setup(start_cloud)
    fed = services.federated
    assert fed is not None
    devices = start_round(agg, cloud, N, fed.dim)
    run_to_unmask(agg, devices)
    r = redis.Redis.from_url(redis_url)
    masked_board = [k for k in r.scan_iter("*:sa:*:b:masked")]
    assert len(masked_board) == 1
    stored = r.hgetall(masked_board[0])
    for d in devices:
        m = pb.SecAggMasked.FromString(stored[d.id.encode()])
        vals = np.frombuffer(m.row_data, "<u4").reshape(m.rows, m.cols)
        # the plain input's counts and indicators (small integers) are nowhere to be seen
        assert (vals == d.rows).mean() < 0.01
        assert (vals[:, -2:] > 1 << 16).mean() > 0.9
    assert agg.step(block_ms=10) is None
    for d in devices:
        d.unmask()
    assert agg.step(block_ms=10) == "applied"
    left = [k.decode() for k in r.scan_iter("*:sa:*")]
    assert all(k.endswith(":phase") for k in left), left  # boards deleted with the round
    stream = [k for k in r.scan_iter("*{fl}:updates")]
    assert all(r.xlen(k) == 0 for k in stream)  # no plain push ever entered the stream
    assert math.isfinite(float(rows_of(cloud, [0]).sum()))


def test_hostile_stages_are_refused_or_abort_the_round_cleanly(start_cloud: StartCloud) -> None:
    """Duplicate ids and a low-order key are refused at the edge; forged shares that only the
    unmasking can detect abort the round (model unchanged) instead of wedging it."""
    _, services, agg, cloud = setup(start_cloud)
    fed = services.federated
    assert fed is not None
    devices = start_round(agg, cloud, N, fed.dim)
    d = devices[0]
    with pytest.raises(CloudError, match="must be unique"):
        cloud.pull_submodel(d.id, d.round_id, [1, 1, 2], 5)
    weak = KeyAdvert(d.id, bytes(32), b"\x09" + bytes(31))
    with pytest.raises(CloudError, match="low-order point"):
        cloud.secure_aggregate(d.id, d.round_id, weak, 5)
    before = rows_of(cloud, list(range(40)))
    version = fed.store.version()
    run_to_unmask(agg, devices)
    assert agg.step(block_ms=10) is None  # unmask phase
    for x in devices:  # every answer forged: whichever t the server combines, it sees garbage
        reply = cloud.secure_aggregate(x.id, x.round_id, None, 5)
        honest = x.client.unmask(reply.survivors, reply.dropped)
        forged = UnmaskShares(x.id, {}, {k: (v + 1) % PRIME for k, v in honest.b_shares.items()})
        assert cloud.secure_aggregate(x.id, x.round_id, forged, 5).accepted
    assert agg.step(block_ms=10) == "aborted"
    np.testing.assert_array_equal(rows_of(cloud, list(range(40))), before)
    assert fed.store.version() == version
