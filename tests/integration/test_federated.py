"""Federated rounds on a real Redis: life cycle, quorum abort, staleness, duplicates, SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import redis
import torch

from cloud_service.build import build_round_config
from cloud_service.federated.aggregate import fedsubavg
from cloud_service.federated.aggregator import Aggregator
from cloud_service.federated.defences import Defences
from cloud_service.registry.bundle import ServingBundle, load_bundle
from cloud_service.server import CloudServer
from cloud_service.services.container import CloudServices
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from protos.vectors import matrix_from_proto, matrix_to_proto
from tandem_core.federated.update import ModelUpdate
from tandem_core.models.din import ranker_from_federated
from tests.integration.conftest import StartCloud
from training.federated.publish import PublishError, publish

pytestmark = pytest.mark.integration
DIM = 34  # a federated row: item embedding (32) | item bias (CTR, CVR)
FL = {"fl_devices_per_round": 3, "fl_over_select": 0.0, "fl_quorum_share": 1.0, "fl_round_s": 30}


class Phone:
    """A device talking to the parameter server over gRPC, pushing the deltas it is given."""

    def __init__(self, server: CloudServer, services: CloudServices, device_id: str) -> None:
        self.stub = pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        self.meta = [("x-device-token", services.auth.token_for(device_id))]
        self.device_id = device_id

    def pull(self, ids: list[int], round_id: str = "") -> pb.PullResponse:
        req = pb.PullRequest(device_id=self.device_id, round_id=round_id, item_ids=ids)
        return self.stub.PullSubmodel(req, metadata=self.meta, timeout=5)

    def push(
        self, round_id: str, base: int, ids: list[int], deltas: np.ndarray, update_id: str = "",
        counts: list[int] | None = None, **privacy: Any,
    ) -> pb.PushResponse:  # fmt: skip
        report = {"epsilon": math.inf, "keep_prob": 1.0, "decoy_prob": 0.0} | privacy
        req = pb.PushRequest(
            device_id=self.device_id, round_id=round_id,
            update_id=update_id or f"{self.device_id}-{round_id}", base_version=base,
            item_ids=ids, row_deltas=matrix_to_proto(deltas),
            row_sample_counts=counts or [1] * len(ids), num_samples=max(counts or [1]),
            privacy=pb.PrivacyReport(**report),
        )  # fmt: skip
        return self.stub.PushUpdate(req, metadata=self.meta, timeout=5)


def aggregator(services: CloudServices, name: str = "agg-test") -> Aggregator:
    fed = services.federated
    assert fed is not None
    return Aggregator(
        fed.store, build_round_config(services.settings.federated), fed.dim, Defences(), name,
        rng=np.random.default_rng(0),
    )  # fmt: skip


def open_round(agg: Aggregator, phones: list[Phone]) -> pb.PullResponse:
    for p in phones:
        p.pull([])  # check in
    agg.step(block_ms=10)
    info = phones[0].pull([])
    assert info.round_id and info.selected
    return info


def rows_of(phone: Phone, ids: list[int]) -> np.ndarray:
    return matrix_from_proto(phone.pull(ids).rows)


def test_round_life_cycle_applies_fedsubavg(start_cloud: StartCloud) -> None:
    server, services = start_cloud(**FL)
    phones = [Phone(server, services, f"fl-{i}") for i in range(3)]
    agg = aggregator(services)
    info = open_round(agg, phones)
    assert not info.dense and info.ByteSize() < 200  # a bare check-in carries no layers
    assert len(phones[0].pull([], info.round_id).dense) > 5  # a pull for the round does
    before = rows_of(phones[0], [1, 2, 3])
    dim = before.shape[1]
    rng = np.random.default_rng(1)
    pushed = []
    for p, ids in zip(phones, ([1, 2], [2, 3], [2]), strict=True):
        deltas = rng.normal(0, 0.1, size=(len(ids), dim)).astype(np.float32)
        reply = p.push(info.round_id, info.base_version, ids, deltas, counts=[2] * len(ids))
        assert reply.accepted and reply.stream_entry_id
        pushed.append(ModelUpdate(p.device_id, np.array(ids), deltas, np.full(len(ids), 2)))
    assert agg.step(block_ms=50) == "applied"  # everyone answered: no need to wait
    ids, delta = fedsubavg(pushed, dim)
    after = rows_of(phones[0], [1, 2, 3])
    np.testing.assert_allclose(after, before + delta, rtol=1e-6, atol=1e-7)
    assert ids.tolist() == [1, 2, 3]
    assert phones[0].pull([]).base_version == info.base_version + 1


def test_fedlaavg_reuses_the_latest_update_of_a_device_that_sat_out(
    start_cloud: StartCloud,
) -> None:
    fl = FL | {"fl_devices_per_round": 1, "fl_algorithm": "fedlaavg"}  # one device a round
    server, services = start_cloud(**fl)
    a, b = Phone(server, services, "la-a"), Phone(server, services, "la-b")
    fed = services.federated
    assert fed is not None
    agg = Aggregator(
        fed.store, build_round_config(services.settings.federated), fed.dim, Defences("fedlaavg"),
        "agg-la", rng=np.random.default_rng(0),
    )  # fmt: skip
    a.pull([]), b.pull([])
    pushes = {"la-a": ([5], 0.1), "la-b": ([6], 0.2)}  # within the row bound (10)
    seen = []
    for _ in range(2):  # most outdated first: la-a (by id), then la-b, who has never pushed
        agg.step(block_ms=10)
        phone = a if a.pull([]).selected else b
        info = phone.pull([])
        ids, value = pushes[phone.device_id]
        before = rows_of(a, [5, 6])
        assert phone.push(
            info.round_id, info.base_version, ids, np.full((1, DIM), value, np.float32)
        ).accepted
        assert agg.step(block_ms=50) == "applied"
        seen.append((phone.device_id, rows_of(a, [5, 6]) - before))
    assert [d for d, _ in seen] == ["la-a", "la-b"]
    second = seen[1][1]  # la-b pushed row 6; la-a sat out, its latest update (row 5) counts again
    np.testing.assert_allclose(second[0], 0.1, rtol=1e-5)
    np.testing.assert_allclose(second[1], 0.2, rtol=1e-5)


def test_below_quorum_the_round_is_abandoned_bit_for_bit(
    start_cloud: StartCloud, redis_url: str
) -> None:
    server, services = start_cloud(**(FL | {"fl_round_s": 0.5}))
    phones = [Phone(server, services, f"q-{i}") for i in range(3)]
    agg = aggregator(services)
    info = open_round(agg, phones)
    client = redis.Redis.from_url(redis_url)
    snapshot = {k: client.dump(k) for k in (b"tandem:{fl}:rows", b"tandem:{fl}:dense")}
    for p in phones[:2]:  # quorum is all three
        assert p.push(info.round_id, info.base_version, [4], np.ones((1, DIM), np.float32)).accepted
    time.sleep(0.6)
    assert agg.step(block_ms=10) == "aborted"
    assert {k: client.dump(k) for k in snapshot} == snapshot
    assert client.get("tandem:{fl}:version") == b"0"
    assert client.xlen("tandem:{fl}:updates") == 0  # the round's updates left with it
    late = phones[2].push(info.round_id, info.base_version, [4], np.ones((1, DIM), np.float32))
    assert not late.accepted and late.reason == "closed"


def test_duplicates_apply_once_and_stale_or_bad_pushes_are_refused(
    start_cloud: StartCloud, redis_url: str
) -> None:
    server, services = start_cloud(**(FL | {"fl_devices_per_round": 2, "fl_staleness_bound": 0}))
    a, b = Phone(server, services, "dup-a"), Phone(server, services, "dup-b")
    outsider = Phone(server, services, "outsider")
    agg = aggregator(services)
    info = open_round(agg, [a, b])
    d_a, d_b = np.full((1, DIM), 0.1, np.float32), np.full((1, DIM), 0.4, np.float32)
    first = a.push(info.round_id, info.base_version, [7], d_a, update_id="u-a")
    again = a.push(info.round_id, info.base_version, [7], d_a, update_id="u-a")
    assert first.accepted and again.accepted and again.reason == "duplicate"
    assert again.stream_entry_id == first.stream_entry_id
    assert not outsider.push(info.round_id, 0, [7], d_a).accepted  # registered too late
    client = redis.Redis.from_url(redis_url)
    length = client.xlen("tandem:{fl}:updates")
    for bad in (
        dict(ids=[7], deltas=np.full((1, DIM - 1), 1.0, np.float32)),  # wrong dim
        dict(ids=[7], deltas=np.full((1, DIM), np.nan, np.float32)),  # NaN
        dict(ids=[10**9], deltas=d_a),  # unknown item
        dict(ids=[7], deltas=d_a, epsilon=0.1, keep_prob=0.9, decoy_prob=0.1),  # ε understated
    ):
        kw = {k: v for k, v in bad.items() if k not in ("ids", "deltas")}
        with pytest.raises(grpc.RpcError) as err:
            b.push(info.round_id, info.base_version, bad["ids"], bad["deltas"], **kw)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert client.xlen("tandem:{fl}:updates") == length  # refused pushes stored nothing
    before = rows_of(a, [7])
    assert b.push(info.round_id, info.base_version, [7], d_b).accepted
    assert agg.step(block_ms=50) == "applied"
    np.testing.assert_allclose(rows_of(a, [7]), before + 0.25, rtol=1e-5)  # (.1 + .4) / 2, not .2
    nxt = open_round(agg, [a, b])
    stale = a.push(nxt.round_id, nxt.base_version - 1, [7], d_a, update_id="u-stale")
    assert not stale.accepted and stale.reason == "stale"


def test_rest_mirror_pulls_the_same_rows(start_cloud: StartCloud) -> None:
    server, services = start_cloud(**FL)
    phone = Phone(server, services, "rest-1")
    body = httpx.post(
        f"http://127.0.0.1:{server.http_port}/v1/submodel/pull",
        json={"deviceId": "rest-1", "itemIds": ["3", "9"]},
        headers={"x-device-token": services.auth.token_for("rest-1")}, timeout=5,
    )  # fmt: skip
    assert body.status_code == 200, body.text
    from google.protobuf import json_format

    reply = json_format.ParseDict(body.json(), pb.PullResponse())
    np.testing.assert_array_equal(matrix_from_proto(reply.rows), rows_of(phone, [3, 9]))
    assert len(reply.dense) > 5


def test_sigkill_of_the_aggregator_loses_no_acknowledged_update(
    start_cloud: StartCloud, redis_url: str, tmp_path: Any
) -> None:
    fl = FL | {"fl_devices_per_round": 4, "fl_quorum_share": 0.75, "fl_round_s": 4,
               "fl_clip_median": False}  # fmt: skip
    server, services = start_cloud(**fl)
    phones = [Phone(server, services, f"k-{i}") for i in range(4)]
    for p in phones:
        p.pull([])
    env = {
        **os.environ, "CLOUD_REDIS_URL": redis_url,
        "CLOUD_BUNDLE_DIR": str(services.settings.models.bundle_dir),
        **{f"CLOUD_{k.upper()}": str(v) for k, v in fl.items()},
    }  # fmt: skip
    cmd = [sys.executable, "-m", "cloud_service.federated.aggregator"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (info := phones[0].pull([])).round_id:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        before = rows_of(phones[0], [5])
        acked = 0
        for i, p in enumerate(phones[:3]):  # the fourth never answers: the round waits
            delta = np.full((1, DIM), 0.1 * (i + 1), np.float32)
            acked += p.push(info.round_id, info.base_version, [5], delta).accepted
        assert acked == 3
        time.sleep(0.3)  # let it read them into memory, then kill it without warning
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        client = redis.Redis.from_url(redis_url)
        assert client.get("tandem:{fl}:version") == b"0"  # nothing applied yet
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while client.get("tandem:{fl}:version") != b"1":
            assert time.monotonic() < deadline, "the restarted aggregator did not apply the round"
            time.sleep(0.1)
        np.testing.assert_allclose(rows_of(phones[0], [5]), before + 0.2, rtol=1e-5)  # .1 .2 .3
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_published_bundle_serves_the_federated_rows(
    start_cloud: StartCloud, tmp_path: Path
) -> None:
    server, services = start_cloud(**FL)
    fed = services.federated
    assert fed is not None
    phones = [Phone(server, services, f"pub-{i}") for i in range(3)]
    agg = aggregator(services)
    info = open_round(agg, phones)
    dim = rows_of(phones[0], [1]).shape[1]
    rng = np.random.default_rng(4)
    for p in phones:
        deltas = rng.normal(0, 0.5, size=(3, dim)).astype(np.float32)
        assert p.push(info.round_id, info.base_version, [1, 2, 3], deltas).accepted
    assert agg.step(block_ms=50) == "applied"

    source = services.settings.models.bundle_dir
    manifest = publish(fed.store, source, tmp_path / "published")
    old, new = load_bundle(source), load_bundle(tmp_path / "published")  # sha256 checked
    assert manifest["federated_version"] == fed.store.version() == 1
    assert new.version.startswith(f"{old.version}+fl1.")
    assert new.embedding_version == old.embedding_version
    np.testing.assert_array_equal(new.item_rows, old.item_rows)  # devices' inputs unchanged

    rows, dense, _ = fed.store.snapshot(range(new.n_items), dim)
    reference = ranker_from_federated(rows, dense, new.item_category).eval()
    history, candidates = np.array([[4, 6, -1]]), np.array([[1, 2, 3, 5]])
    with torch.no_grad():
        want, _ = reference(torch.tensor(history), torch.tensor(candidates))

    def ctr(bundle: ServingBundle) -> np.ndarray:
        session = ort.InferenceSession(bundle.ranker_onnx, providers=["CPUExecutionProvider"])
        return session.run(["ctr"], {"history": history, "candidates": candidates})[0]

    np.testing.assert_allclose(ctr(new), want.numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(ctr(new)[0, :3], ctr(old)[0, :3])  # the pushed rows moved the scores
    np.testing.assert_allclose(ctr(new)[0, 3], ctr(old)[0, 3], rtol=1e-5)  # item 5: not pushed

    # published unsigned (no release key given): served only by a replica told to accept that
    served, _ = start_cloud(**FL, bundle_dir=tmp_path / "published", allow_unsigned=True,
                            release_public_key_file=None)  # fmt: skip
    reply = Phone(served, services, "pub-0").stub.Recommend(
        pb.RecommendRequest(device_id="pub-0", k=5), metadata=phones[0].meta, timeout=5
    )
    assert reply.model_version == new.version and len(reply.items) == 5
    for taken in (source, tmp_path / "published"):  # never over a bundle, served or not
        with pytest.raises(PublishError, match="not empty"):
            publish(fed.store, source, taken)
