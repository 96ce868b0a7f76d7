"""Hostile devices against the live parameter server and aggregator on a real Redis (issue 15)."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
import redis

from cloud_service.build import build_defences
from cloud_service.federated.defences import Defences
from protos.tandem.v1 import tandem_pb2 as pb
from protos.vectors import matrix_to_proto
from tests.integration.conftest import StartCloud
from tests.integration.test_federated import DIM, Phone, aggregator, open_round, rows_of

pytestmark = pytest.mark.integration
FL = {"fl_devices_per_round": 4, "fl_over_select": 0.0, "fl_quorum_share": 1.0, "fl_round_s": 30}
STREAM = "tandem:{fl}:updates"


def raw_push(
    phone: Phone, info: pb.PullResponse, ids: list[int], deltas: np.ndarray, num_samples: int,
    update_id: str,
) -> pb.PushResponse:  # fmt: skip
    req = pb.PushRequest(
        device_id=phone.device_id, round_id=info.round_id, update_id=update_id,
        base_version=info.base_version, item_ids=ids, row_deltas=matrix_to_proto(deltas),
        row_sample_counts=[1] * len(ids), num_samples=num_samples,
        privacy=pb.PrivacyReport(epsilon=math.inf, keep_prob=1.0, decoy_prob=0.0),
    )  # fmt: skip
    return phone.stub.PushUpdate(req, metadata=phone.meta, timeout=5)


def test_a_3e38_or_a_million_sample_push_is_refused_and_honest_pushes_go_on(
    start_cloud: StartCloud, redis_url: str
) -> None:
    server, services = start_cloud(**FL)
    phones = [Phone(server, services, f"honest-{i}") for i in range(3)]
    evil = Phone(server, services, "evil")
    agg = aggregator(services)
    client = redis.Redis.from_url(redis_url)
    for rnd in range(2):  # the old failure: one such push, then most honest pushes refused
        info = open_round(agg, [*phones, evil])
        before = rows_of(evil, list(range(20)))
        length = client.xlen(STREAM)
        for ids, deltas, n in (
            ([5], np.full((1, DIM), 3e38, np.float32), 1),  # finite, absurd
            ([5, 6], np.array([np.full(DIM, 1e-3), np.full(DIM, 3e38)], np.float32), 1),
            ([5], np.full((1, DIM), 1e-3, np.float32), 10**6),  # claims a million samples
        ):
            with pytest.raises(grpc.RpcError) as err:
                raw_push(evil, info, ids, deltas, n, f"evil-{rnd}-{n}-{len(ids)}")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.xlen(STREAM) == length  # nothing stored
        np.testing.assert_array_equal(rows_of(evil, list(range(20))), before)  # model as it was
        step = np.full((1, DIM), 0.01, np.float32)
        for p in [*phones, evil]:  # the refused device may still push its honest update
            ok = p.push(info.round_id, info.base_version, [5], step, f"{p.device_id}-{rnd}")
            assert ok.accepted and ok.reason == "accepted"
        assert agg.step(block_ms=50) == "applied"
        np.testing.assert_allclose(rows_of(evil, [5]), before[[5]] + 0.01, rtol=1e-5)


def test_a_device_gets_one_update_per_round_applied(start_cloud: StartCloud) -> None:
    server, services = start_cloud(**(FL | {"fl_devices_per_round": 2}))
    a, b = Phone(server, services, "rep-a"), Phone(server, services, "rep-b")
    agg = aggregator(services)
    info = open_round(agg, [a, b])
    before = rows_of(a, [3])
    one, more = np.full((1, DIM), 0.2, np.float32), np.full((1, DIM), 1.5, np.float32)
    first = a.push(info.round_id, info.base_version, [3], one, update_id="a-1")
    assert first.accepted
    for k in range(2, 5):  # repeated pushes under fresh update ids: refused, nothing stored
        again = a.push(info.round_id, info.base_version, [3], more, update_id=f"a-{k}")
        assert not again.accepted and again.reason == "already_pushed"
    retry = a.push(info.round_id, info.base_version, [3], one, update_id="a-1")
    assert retry.accepted and retry.reason == "duplicate"  # the idempotent retry still works
    assert b.push(info.round_id, info.base_version, [3], one * 3, update_id="b-1").accepted
    assert agg.step(block_ms=50) == "applied"
    np.testing.assert_allclose(rows_of(a, [3]), before + 0.4, rtol=1e-5)  # (0.2 + 0.6) / 2


def test_defences_bound_a_sign_flipping_attacker(start_cloud: StartCloud) -> None:
    """5 honest devices push +0.1 on a row, 1 attacker −1.5 (10 × flipped, within the hard
    bound). Undefended the row moves the wrong way; the deployed defaults (median clipping) and
    the robust rows (trimmed mean) keep it near the honest step."""
    server, services = start_cloud(**(FL | {"fl_devices_per_round": 6}))
    phones = [Phone(server, services, f"h-{i}") for i in range(5)]
    evil = Phone(server, services, "flip")
    agg = aggregator(services)
    honest, bad = np.full((1, DIM), 0.1, np.float32), np.full((1, DIM), -1.5, np.float32)
    moved = {}
    profiles = {
        "none": Defences(),
        "deployed": build_defences(services.settings.federated),
        "robust": Defences(clip_median=True, row_aggregator="trimmed_mean", trim=0.2),
    }
    for name, defences in profiles.items():
        agg.defences = defences
        info = open_round(agg, [*phones, evil])
        before = rows_of(evil, [9])
        for p in phones:
            assert p.push(info.round_id, info.base_version, [9], honest, f"{p.device_id}-{name}")
        assert evil.push(info.round_id, info.base_version, [9], bad, f"flip-{name}").accepted
        assert agg.step(block_ms=50) == "applied"
        moved[name] = float((rows_of(evil, [9]) - before).mean())
    assert moved["none"] == pytest.approx((5 * 0.1 - 1.5) / 6, rel=1e-4)  # the wrong way
    assert services.settings.federated.clip_median  # the deployed default clips
    for name in ("deployed", "robust"):
        assert moved[name] > 0
        assert abs(moved[name] - 0.1) < 0.25 * abs(moved["none"] - 0.1)
    assert moved["robust"] == pytest.approx(0.1, rel=1e-4)
