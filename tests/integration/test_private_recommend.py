"""The private Recommend over the real cloud gRPC and REST servers, a real Redis and a real agent:
answered with k items, refused when it carries behaviour, and no behaviour left in Redis."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import redis
import torch

from cloud_service.store.codec import decode_session
from cloud_service.store.keys import Keys
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from protos.vectors import matrix_to_proto
from tandem_core.signing import Signer
from tests.credentials import app_post
from tests.integration.conftest import StartCloud
from training.private_mode.encoder import EncoderConfig, InterestEncoder
from training.private_mode.export import write_encoder_artifact
from training.tiny import ArtifactDirs

pytestmark = pytest.mark.integration
K = 8


def pseudo_history(services: Any, items: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Two pseudo-history rows made from some items' rows, as an encoder would send them."""
    rows = services.recommend.recommender.bundle.item_rows[items]
    half = len(items) // 2
    set_ = np.stack([rows[:half].mean(0), rows[half:].mean(0)]).astype(np.float32)
    return set_, np.array([half, len(items) - half], np.float32)


def private_grpc(device: str, rows: np.ndarray, weights: np.ndarray, **kw: Any) -> Any:
    req = pb.RecommendRequest(
        device_id=device, k=K, private=True, interest_weights=weights.tolist(), **kw
    )
    req.interest_set.CopyFrom(matrix_to_proto(rows))
    return req


def private_rest(device: str, rows: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    data = base64.b64encode(np.ascontiguousarray(rows, "<f4").tobytes()).decode()
    return {
        "device_id": device, "k": K, "private": True, "interest_weights": weights.tolist(),
        "interest_set": {"rows": rows.shape[0], "cols": rows.shape[1], "data": data},
        "exclude_item_ids": [1, 2, 3],
    }  # fmt: skip


def stored(redis_url: str, device: str) -> bytes | None:
    client = redis.Redis.from_url(redis_url)
    try:
        return client.get(Keys().session(device))  # type: ignore[return-value]
    finally:
        client.close()


def test_private_requests_are_answered_and_leave_no_behaviour_in_redis(
    start_cloud: StartCloud, redis_url: str
) -> None:
    server, services = start_cloud()
    stub = pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    meta = [("x-device-token", services.auth.token_for("dev-p"))]
    clicked = [3, 7, 11, 19]
    default = pb.RecommendRequest(
        device_id="dev-p", k=K,
        recent=[pb.Behavior(item_id=i, action=pb.CLICK, timestamp_ms=t + 1)
                for t, i in enumerate(clicked)],
    )  # fmt: skip
    stub.Recommend(default, metadata=meta, timeout=5)
    before = decode_session(stored(redis_url, "dev-p") or b"")
    assert [b.item_id for b in before.recent] == clicked  # the default mode keeps the window
    rows, weights = pseudo_history(services, clicked)
    reply = stub.Recommend(
        private_grpc("dev-p", rows, weights, exclude_item_ids=[1, 2]), metadata=meta, timeout=5
    )
    ids = [i.item_id for i in reply.items]
    assert len(ids) == K and not {1, 2} & set(ids)
    scores = [i.score for i in reply.items]
    assert scores == sorted(scores, reverse=True)
    after = decode_session(stored(redis_url, "dev-p") or b"")
    assert after.recent == [] and after.interest is None and after.served == []  # purged
    r = httpx.post(
        f"http://127.0.0.1:{server.http_port}/v1/recommend",
        json=private_rest("dev-r", rows, weights),
        headers={"x-device-token": services.auth.token_for("dev-r")}, timeout=5,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    rest_ids = [i["item_id"] for i in r.json()["items"]]
    assert len(rest_ids) == K and not {1, 2, 3} & set(rest_ids)
    assert stored(redis_url, "dev-r") is None  # nothing to keep: no key at all


def test_a_private_request_with_behaviour_or_a_bad_set_is_refused_and_stores_nothing(
    start_cloud: StartCloud, redis_url: str
) -> None:
    server, services = start_cloud()
    stub = pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    meta = [("x-device-token", services.auth.token_for("dev-x"))]
    rows, weights = pseudo_history(services, [3, 7])
    bad = private_grpc("dev-x", rows, weights)
    bad.recent.append(pb.Behavior(item_id=3, action=pb.CLICK, timestamp_ms=1))
    wrong_dim = private_grpc("dev-x", rows[:, :-1], weights)
    too_big = private_grpc("dev-x", rows + 1e3, weights)
    for request, message in [(bad, "no behaviour"), (wrong_dim, "dim"), (too_big, "within")]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(request, metadata=meta, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (err.value.details() or "")
    body = private_rest("dev-x", rows, weights)
    body["recent"] = [{"item_id": 3, "action": "click", "timestamp_ms": 1}]
    r = httpx.post(
        f"http://127.0.0.1:{server.http_port}/v1/recommend", json=body,
        headers={"x-device-token": services.auth.token_for("dev-x")}, timeout=5,
    )  # fmt: skip
    assert r.status_code == 422 and "no behaviour" in r.text
    assert stored(redis_url, "dev-x") is None


def encoder_version(tmp: Path, artifacts: ArtifactDirs) -> Path:
    """A signed interest-encoder version directory for the tiny bundle's rows."""
    torch.manual_seed(0)
    encoder = InterestEncoder(EncoderConfig(dim=artifacts.dim)).eval()
    assert artifacts.private_key is not None
    out = tmp / "interest_encoder"
    write_encoder_artifact(
        out, encoder, artifacts.embedding_version, "din-tiny", {},
        Signer.from_file(artifacts.private_key),
    )  # fmt: skip
    return out


def test_an_agent_in_private_mode_keeps_its_behaviour_out_of_redis(
    start_cloud: StartCloud, start_agent: Any, redis_url: str, tiny_artifacts: ArtifactDirs,
    tmp_path: Path,
) -> None:  # fmt: skip
    cloud, _ = start_cloud(interest_encoder_dir=encoder_version(tmp_path, tiny_artifacts))
    url, _ = start_agent(
        cloud.grpc_port, private_recommend=True, request_budget=1.0, pacer_burst=100.0
    )
    for step in range(6):
        page = app_post(f"{url}/v1/recommend", json={"device_id": "phone-p", "k": 4}).json()
        assert len(page["items"]) == 4
        events = [{"item_id": it["item_id"], "action": "click", "timestamp_ms": 100 * step + j}
                  for j, it in enumerate(page["items"][:2])]  # fmt: skip
        assert app_post(
            f"{url}/v1/events", json={"device_id": "phone-p", "events": events}
        ).is_success
    status = httpx.get(f"{url}/v1/status").json()
    assert status["recommend_mode"] == "private"
    assert status["interest_encoder"].startswith("interest-")  # fetched from the registry
    assert status["private_requests"].get("encoder", 0) >= 1  # the pseudo-history was sent
    assert status["events_forwarding"] is None  # the events stay on the device too
    assert status["cloud_requests"] >= 1
    assert stored(redis_url, "phone-p") is None
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.xlen(Keys().events()) == 0
    finally:
        client.close()
