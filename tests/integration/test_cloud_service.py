"""The cloud service over real gRPC and HTTP servers on port 0, with a real Redis."""

from __future__ import annotations

import base64
import math
import time

import grpc
import httpx
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cloud_service.store.keys import Keys
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from protos.vectors import vector_from_proto, vector_to_proto
from tests.integration.conftest import StartCloud

pytestmark = pytest.mark.integration

RECENT = [(3, "click", 1_000), (7, "exposure", 2_000), (11, "purchase", 3_000)]
CLICK_1 = {"item_id": 1, "action": "click", "timestamp_ms": 1}
NAN = base64.b64encode(np.float32([np.nan]).tobytes()).decode()
PB_ACTION = {"exposure": pb.EXPOSURE, "click": pb.CLICK, "purchase": pb.PURCHASE}


def grpc_stub(port: int) -> pb_grpc.TandemStub:
    return pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def grpc_request(device: str, k: int = 8) -> pb.RecommendRequest:
    return pb.RecommendRequest(
        device_id=device, k=k,
        recent=[pb.Behavior(item_id=i, action=PB_ACTION[a], timestamp_ms=t) for i, a, t in RECENT],
    )  # fmt: skip


def rest_body(device: str, k: int = 8) -> dict[str, object]:
    return {
        "device_id": device, "k": k,
        "recent": [{"item_id": i, "action": a, "timestamp_ms": t} for i, a, t in RECENT],
    }  # fmt: skip


def test_grpc_and_rest_give_the_same_answer(start_cloud: StartCloud) -> None:
    server, services = start_cloud()
    g = grpc_stub(server.grpc_port).Recommend(
        grpc_request("dev-g"), metadata=[("x-device-token", services.auth.token_for("dev-g"))],
        timeout=5,
    )  # fmt: skip
    r = httpx.post(
        f"http://127.0.0.1:{server.http_port}/v1/recommend", json=rest_body("dev-r"),
        headers={"x-device-token": services.auth.token_for("dev-r")}, timeout=5,
    ).json()  # fmt: skip
    assert [i.item_id for i in g.items] == [i["item_id"] for i in r["items"]]
    assert len(g.items) == 8
    np.testing.assert_allclose(
        [i.score for i in g.items], [i["score"] for i in r["items"]], rtol=1e-6
    )
    assert [i.category_id for i in g.items] == [i["category_id"] for i in r["items"]]
    rows = services.recommend.recommender.bundle.item_rows  # sent as the bundle holds them
    for gi, ri in zip(g.items, r["items"], strict=True):
        assert gi.embedding.data == base64.b64decode(ri["embedding"]["data"])
        assert gi.embedding.dim == ri["embedding"]["dim"] == 40
        np.testing.assert_array_equal(np.frombuffer(gi.embedding.data, "<f4"), rows[gi.item_id])
    assert g.model_version == r["model_version"] and g.embedding_version == r["embedding_version"]
    assert not {3, 7, 11} & {i.item_id for i in g.items}  # behaviour is not recommended back
    scores = [i.score for i in g.items]
    assert scores == sorted(scores, reverse=True)


def test_a_second_call_excludes_what_the_session_already_served(start_cloud: StartCloud) -> None:
    server, services = start_cloud(exclude_served=True, session_served_len=12)
    stub, meta = grpc_stub(server.grpc_port), [("x-device-token", services.auth.token_for("d1"))]
    first = stub.Recommend(grpc_request("d1"), metadata=meta, timeout=5)
    second = stub.Recommend(pb.RecommendRequest(device_id="d1", k=8), metadata=meta, timeout=5)
    assert len(second.items) == 8
    assert not {i.item_id for i in first.items} & {i.item_id for i in second.items}
    session = services.recommend.sessions.load("d1")
    sent = [i.item_id for i in [*first.items, *second.items]]
    assert session is not None and session.served == sent[-12:]  # the newest, bounded


def test_without_exclude_served_the_session_keeps_no_served_items(
    start_cloud: StartCloud,
) -> None:
    server, services = start_cloud()  # exclude_served is off by default
    stub, meta = grpc_stub(server.grpc_port), [("x-device-token", services.auth.token_for("d2"))]
    first = stub.Recommend(grpc_request("d2"), metadata=meta, timeout=5)
    second = stub.Recommend(pb.RecommendRequest(device_id="d2", k=8), metadata=meta, timeout=5)
    session = services.recommend.sessions.load("d2")
    assert session is not None and session.served == []
    assert [b.item_id for b in session.recent] == [i for i, _, _ in RECENT]  # still saved
    # nothing sent is withheld: with the same behaviour, the same list again
    assert [i.item_id for i in second.items] == [i.item_id for i in first.items]


def test_health_and_reflection(start_cloud: StartCloud) -> None:
    server, _ = start_cloud()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="tandem.v1.Tandem"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"tandem.v1.Tandem", "grpc.health.v1.Health"} <= names
    http = f"http://127.0.0.1:{server.http_port}"
    assert httpx.get(f"{http}/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.get(f"{http}/readyz", timeout=5).json()["status"] == "ready"
    assert "/v1/recommend" in httpx.get(f"{http}/openapi.json", timeout=5).json()["paths"]
    server.drain()  # what SIGTERM does first
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert httpx.get(f"{http}/readyz", timeout=5).status_code == 503


def test_metrics_count_calls_without_ids_as_labels(start_cloud: StartCloud) -> None:
    server, services = start_cloud()
    stub = grpc_stub(server.grpc_port)
    stub.Recommend(grpc_request("m1"), metadata=[("x-device-token", services.auth.token_for("m1"))])
    text = httpx.get(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5).text
    assert 'tandem_cloud_requests_total{code="OK",method="Recommend",transport="grpc"}' in text
    assert 'tandem_cloud_budget_decisions_total{decision="allowed"}' in text
    assert "m1" not in text


@pytest.mark.parametrize("token", [None, "0" * 64, "not-hex"])
def test_missing_or_wrong_token_is_unauthenticated(
    start_cloud: StartCloud, token: str | None
) -> None:
    server, _ = start_cloud()
    meta = [] if token is None else [("x-device-token", token)]
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub(server.grpc_port).Recommend(grpc_request("victim"), metadata=meta, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    headers = {} if token is None else {"x-device-token": token}
    http = f"http://127.0.0.1:{server.http_port}"
    r = httpx.post(f"{http}/v1/recommend", json=rest_body("victim"), headers=headers, timeout=5)
    assert r.status_code == 401
    r = httpx.post(
        f"{http}/v1/events", headers=headers, timeout=5,
        json={"device_id": "victim", "events": [CLICK_1]},
    )  # fmt: skip
    assert r.status_code == 401


def test_a_device_cannot_use_its_token_for_another_device(
    start_cloud: StartCloud, redis_url: str
) -> None:
    server, services = start_cloud()
    mine = services.auth.token_for("attacker")
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub(server.grpc_port).Recommend(
            grpc_request("victim"), metadata=[("x-device-token", mine)], timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert redis.Redis.from_url(redis_url).get(Keys().session("victim")) is None


def test_budget_answers_429_and_resource_exhausted_past_the_rate(start_cloud: StartCloud) -> None:
    rate = 0.5
    server, services = start_cloud(budget_rate=rate, budget_burst=5.0)
    http = f"http://127.0.0.1:{server.http_port}"
    headers = {"x-device-token": services.auth.token_for("b1")}
    start = time.monotonic()
    codes = [
        httpx.post(f"{http}/v1/recommend", json=rest_body("b1"), headers=headers, timeout=5)
        for _ in range(12)
    ]
    refilled = rate * (time.monotonic() - start)  # however slow the machine is today
    allowed = [r for r in codes if r.status_code == 200]
    refused = [r for r in codes if r.status_code == 429]
    # a burst of 5 plus the tokens refilled while the calls ran
    assert 5 <= len(allowed) <= 5 + math.floor(refilled) and len(allowed) + len(refused) == 12
    assert refused  # the test is only meaningful if the calls outran the refill
    assert int(refused[0].headers["Retry-After"]) >= 1
    assert float(refused[0].json()["retry_after_ms"]) > 0
    with pytest.raises(grpc.RpcError) as err:
        for _ in range(10):
            grpc_stub(server.grpc_port).Recommend(
                grpc_request("b1"), metadata=[("x-device-token", headers["x-device-token"])],
                timeout=5,
            )  # fmt: skip
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(err.value.trailing_metadata())
    assert int(trailers["retry-after-ms"]) > 0


def test_budget_is_shared_by_replicas(start_cloud: StartCloud) -> None:
    a, services = start_cloud(budget_rate=0.5, budget_burst=6.0)
    b, _ = start_cloud(budget_rate=0.5, budget_burst=6.0)
    meta = [("x-device-token", services.auth.token_for("s1"))]
    ok = 0
    for server in (a, b) * 5:
        try:
            grpc_stub(server.grpc_port).Recommend(grpc_request("s1"), metadata=meta, timeout=5)
            ok += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ok in (6, 7)  # one bucket of 6 (plus at most one refill), not 6 per replica


def test_model_registry_serves_the_device_model_with_its_sha256(start_cloud: StartCloud) -> None:
    import hashlib

    server, services = start_cloud()
    meta = [("x-device-token", services.auth.token_for("d1"))]
    stub = grpc_stub(server.grpc_port)
    model = stub.GetDeviceModel(pb.DeviceModelRequest(device_id="d1"), metadata=meta, timeout=5)
    assert hashlib.sha256(model.onnx_model).hexdigest() == model.sha256
    assert model.version.startswith("edgerec-") and not model.not_modified
    again = stub.GetDeviceModel(
        pb.DeviceModelRequest(device_id="d1", current_version=model.version),
        metadata=meta,
        timeout=5,
    )
    assert again.not_modified and again.onnx_model == b""
    rest = httpx.get(
        f"http://127.0.0.1:{server.http_port}/v1/device-model", params={"device_id": "d1"},
        headers={"x-device-token": services.auth.token_for("d1")}, timeout=5,
    ).json()  # fmt: skip
    assert base64.b64decode(rest["onnx_model"]) == model.onnx_model


def test_events_go_to_the_bounded_stream(start_cloud: StartCloud, redis_url: str) -> None:
    server, services = start_cloud(events_stream_maxlen=10)
    meta = [("x-device-token", services.auth.token_for("e1"))]
    events = [pb.Event(item_id=i, action=pb.CLICK, timestamp_ms=i, position=0) for i in range(200)]
    stub = grpc_stub(server.grpc_port)
    for lo in range(0, 200, 50):
        reply = stub.ReportEvents(
            pb.ReportEventsRequest(device_id="e1", events=events[lo : lo + 50]), metadata=meta
        )
        assert reply.accepted == 50
    client = redis.Redis.from_url(redis_url)
    length = client.xlen(Keys().events())
    assert 10 <= length < 200  # MAXLEN ~ trims by whole macro-nodes, never below the bound
    last = client.xrevrange(Keys().events(), count=1)[0][1]
    assert last[b"device"] == b"e1" and last[b"item"] == b"199"
    assert last[b"action"] == b"click"  # the action's name (protos/actions.py)


def test_interest_vector_is_used_and_validated(start_cloud: StartCloud) -> None:
    server, services = start_cloud()
    meta = [("x-device-token", services.auth.token_for("v1"))]
    stub = grpc_stub(server.grpc_port)
    bundle = services.recommend.recommender.bundle
    interest = bundle.item_rows[42] * 5
    reply = stub.Recommend(
        pb.RecommendRequest(device_id="v1", k=5, interest=vector_to_proto(interest)),
        metadata=meta, timeout=5,
    )  # fmt: skip
    cold = stub.Recommend(
        pb.RecommendRequest(device_id="v2", k=5),
        metadata=[("x-device-token", services.auth.token_for("v2"))],
        timeout=5,
    )
    unit = bundle.item_rows / np.linalg.norm(bundle.item_rows, axis=1, keepdims=True)
    neighbours = set(np.argsort(-(unit @ interest))[:200].tolist())
    got = [i.item_id for i in reply.items]
    assert set(got) <= neighbours | set(np.argsort(-bundle.popularity)[:200].tolist())
    assert got != [i.item_id for i in cold.items]  # the interest changed the list
    assert len(set(got) & neighbours) >= 3
    row = vector_from_proto(reply.items[0].embedding)
    np.testing.assert_array_equal(row, bundle.item_rows[reply.items[0].item_id])


@pytest.mark.parametrize(
    "body, status",
    [
        ({"device_id": "x1", "k": 0}, 422),
        ({"device_id": "x1", "k": 100_000}, 422),
        ({"device_id": "x1", "k": 5, "recent": [CLICK_1 | {"item_id": -1}]}, 422),
        ({"device_id": "x1", "k": 5, "recent": [CLICK_1 | {"item_id": 10**9}]}, 422),
        ({"device_id": "x1", "k": 5, "recent": [CLICK_1 | {"action": "like"}]}, 422),
        ({"device_id": "x1", "k": 5, "interest": {"dim": 3, "data": "AAAAAAAAAAAAAAAA"}}, 422),
        ({"device_id": "x1", "k": 5, "interest": {"dim": 1, "data": NAN}}, 422),
        ({"device_id": "x1", "k": 5, "exclude_item_ids": [99_999_999]}, 422),
        ({"device_id": "x1", "k": 5, "surprise": 1}, 422),
        ({"device_id": "x1", "k": 5, "recent": [CLICK_1] * 201}, 422),
        ({"device_id": "{x1}", "k": 5}, 422),
    ],
)  # fmt: skip
def test_bad_rest_input_is_refused_and_changes_nothing(
    start_cloud: StartCloud, redis_url: str, body: dict[str, object], status: int
) -> None:
    server, services = start_cloud()
    device = str(body["device_id"])
    token = services.auth.token_for(device) if "{" not in device else "x"
    r = httpx.post(
        f"http://127.0.0.1:{server.http_port}/v1/recommend", json=body,
        headers={"x-device-token": token}, timeout=5,
    )  # fmt: skip
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert redis.Redis.from_url(redis_url).keys("*{dev:*") == []


def test_bad_grpc_input_is_invalid_argument(start_cloud: StartCloud, redis_url: str) -> None:
    server, services = start_cloud()
    meta = [("x-device-token", services.auth.token_for("x2"))]
    stub = grpc_stub(server.grpc_port)
    nan = pb.Vector(dim=40, data=np.full(40, np.inf, dtype="<f4").tobytes())
    bad = [
        pb.RecommendRequest(device_id="x2", k=0),
        pb.RecommendRequest(device_id="x2", k=5, interest=nan),
        pb.RecommendRequest(device_id="x2", k=5, interest=pb.Vector(dim=40, data=b"\0" * 12)),
        pb.RecommendRequest(device_id="x2", k=5, recent=[pb.Behavior(item_id=1)]),  # no action
        pb.RecommendRequest(device_id="x2", k=5, exclude_item_ids=[10**12]),
    ]
    for request in bad:
        with pytest.raises(grpc.RpcError) as err:
            stub.Recommend(request, metadata=meta, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details()
    events = pb.ReportEventsRequest(
        device_id="x2",
        events=[pb.Event(item_id=1, action=pb.CLICK), pb.Event(item_id=10**9, action=pb.CLICK)],
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.ReportEvents(events, metadata=meta, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(Keys().events()) == 0  # the valid first event was not stored either
    assert client.keys("*{dev:*") == []


def test_oversized_and_malformed_bodies(start_cloud: StartCloud) -> None:
    server, services = start_cloud(http_max_body_bytes=2048)
    url = f"http://127.0.0.1:{server.http_port}/v1/recommend"
    headers = {"x-device-token": services.auth.token_for("x3"), "content-type": "application/json"}
    big = rest_body("x3") | {"exclude_item_ids": list(range(1000))}
    assert httpx.post(url, json=big, headers=headers, timeout=5).status_code == 413
    assert httpx.post(url, content=b"{not json", headers=headers, timeout=5).status_code == 422

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(10):
            yield b" " * 1024

    assert httpx.post(url, content=chunks(), headers=headers, timeout=5).status_code == 413


def test_grpc_messages_over_the_limit_are_refused(start_cloud: StartCloud) -> None:
    server, services = start_cloud(grpc_max_receive_bytes=4096)
    meta = [("x-device-token", services.auth.token_for("x4"))]
    request = pb.RecommendRequest(device_id="x4", k=5, exclude_item_ids=list(range(1500)) * 2)
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub(server.grpc_port).Recommend(request, metadata=meta, timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_expired_deadline_is_not_worked_on(start_cloud: StartCloud) -> None:
    server, services = start_cloud()
    meta = [("x-device-token", services.auth.token_for("x5"))]
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub(server.grpc_port).Recommend(grpc_request("x5"), metadata=meta, timeout=0.0005)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_federated_calls_need_the_device_token(start_cloud: StartCloud) -> None:
    server, services = start_cloud()
    stub = grpc_stub(server.grpc_port)
    with pytest.raises(grpc.RpcError) as err:
        stub.PullSubmodel(pb.PullRequest(device_id="f1", item_ids=[1]), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    wrong = [("x-device-token", services.auth.token_for("someone-else"))]
    with pytest.raises(grpc.RpcError) as err:
        stub.PushUpdate(pb.PushRequest(device_id="f1"), metadata=wrong, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
