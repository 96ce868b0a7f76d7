"""Push rules on a real Redis: a push without rows, and the per-round one-update-per-device set."""

from __future__ import annotations

import math

import grpc
import httpx
import numpy as np
import pytest
import redis
from google.protobuf import json_format

from cloud_service.federated.defences import Defences
from cloud_service.server import CloudServer
from cloud_service.services.container import CloudServices
from cloud_service.store.federated_redis import FederatedStore
from protos.tandem.v1 import tandem_pb2 as pb
from protos.vectors import matrix_to_proto, tensor_from_proto, tensor_to_proto
from tests.integration.conftest import StartCloud
from tests.integration.test_federated import DIM, Phone, aggregator, open_round, rows_of

pytestmark = pytest.mark.integration
FL = {"fl_devices_per_round": 2, "fl_over_select": 0.0, "fl_quorum_share": 1.0, "fl_round_s": 30}


def dense_only(
    phone: Phone, info: pb.PullResponse, layer: str, delta: np.ndarray, update_id: str,
    rows: pb.Matrix | None = None,
) -> pb.PushRequest:  # fmt: skip
    return pb.PushRequest(
        device_id=phone.device_id, round_id=info.round_id, update_id=update_id,
        base_version=info.base_version, item_ids=[], row_deltas=rows or pb.Matrix(),
        dense_deltas=[tensor_to_proto(layer, delta)], num_samples=1,
        privacy=pb.PrivacyReport(epsilon=math.inf, keep_prob=1.0, decoy_prob=0.0),
    )  # fmt: skip


def rest_push(server: CloudServer, services: CloudServices, req: pb.PushRequest) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{server.http_port}/v1/submodel/push",
        json=json_format.MessageToDict(req),
        headers={"x-device-token": services.auth.token_for(req.device_id)}, timeout=5,
    )  # fmt: skip


def first_layer(phone: Phone, round_id: str) -> tuple[str, np.ndarray]:
    return tensor_from_proto(phone.pull([], round_id).dense[0])


def test_a_push_without_rows_is_a_dense_only_update_on_both_transports(
    start_cloud: StartCloud,
) -> None:
    """Rule: no rows → accepted, its dense deltas averaged like any push's; rows in a matrix but
    no item ids → INVALID_ARGUMENT / 422. Before, encoding the empty push raised (INTERNAL)."""
    server, services = start_cloud(**FL)
    a, b = Phone(server, services, "empty-grpc"), Phone(server, services, "empty-rest")
    agg = aggregator(services)
    for defences in (Defences(), Defences(row_aggregator="trimmed_mean", trim=0.1)):
        agg.defences = defences
        info = open_round(agg, [a, b])
        layer, before = first_layer(a, info.round_id)
        rows_before = rows_of(a, [4])
        bad = dense_only(a, info, layer, before * 0, "bad", matrix_to_proto(np.ones((1, DIM))))
        with pytest.raises(grpc.RpcError) as err:
            a.stub.PushUpdate(bad, metadata=a.meta, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "row_deltas" in (err.value.details() or "")
        refused = rest_push(
            server, services, dense_only(b, info, layer, 0 * before, "bad", bad.row_deltas)
        )
        assert refused.status_code == 422 and "row_deltas" in refused.text
        step_a = np.full(before.shape, 0.01, np.float32)
        ok = a.stub.PushUpdate(
            dense_only(a, info, layer, step_a, f"a-{defences.row_aggregator}"),
            metadata=a.meta, timeout=5,
        )  # fmt: skip
        assert ok.accepted and ok.reason == "accepted"
        reply = rest_push(
            server, services, dense_only(b, info, layer, 3 * step_a, f"b-{defences.row_aggregator}")
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert reply.json()["accepted"] and reply.json()["reason"] == "accepted"
        assert agg.step(block_ms=50) == "applied"
        nxt = open_round(agg, [a, b])
        _, after = first_layer(a, nxt.round_id)
        np.testing.assert_allclose(after, before + 0.02, rtol=1e-5)  # (0.01 + 0.03) / 2
        np.testing.assert_array_equal(rows_of(a, [4]), rows_before)  # no row moved
        for p in (a, b):  # close this round so the next iteration opens its own
            zero = np.zeros((1, DIM), np.float32)
            assert p.push(
                nxt.round_id, nxt.base_version, [4], zero, f"{p.device_id}-{nxt.round_id}"
            ).accepted
        assert agg.step(block_ms=50) == "applied"


def test_an_entry_of_another_round_in_the_pushed_set_neither_blocks_nor_admits(
    start_cloud: StartCloud, redis_url: str
) -> None:
    """The pushed set maps a device to the round it pushed in; only the open round's id counts
    (an entry left by another round — or by the pre-fix format, an update id — cannot block)."""
    server, services = start_cloud(**FL)
    a, b = Phone(server, services, "scoped-a"), Phone(server, services, "scoped-b")
    agg = aggregator(services)
    info = open_round(agg, [a, b])
    assert services.federated is not None
    store = services.federated.store
    assert isinstance(store, FederatedStore)
    client = redis.Redis.from_url(redis_url)
    client.hset(store.k_pushed, mapping={"scoped-a": "r-earlier", "scoped-b": "scoped-b-old"})
    step = np.full((1, DIM), 0.01, np.float32)
    first = a.push(info.round_id, info.base_version, [2], step, "a-1")
    assert first.accepted and first.reason == "accepted"
    assert b.push(info.round_id, info.base_version, [2], step, "b-1").reason == "accepted"
    again = a.push(info.round_id, info.base_version, [2], step * 50, "a-2")
    assert not again.accepted and again.reason == "already_pushed"  # this round's entry counts
    assert client.hget(store.k_pushed, "scoped-a") == info.round_id.encode()
    client.close()
