"""Hostile bytes on the real gRPC edge: malformed and oversize requests, then honest calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health, health_pb2
from prometheus_client import REGISTRY

from cloud_service.rpc.malformed import method_handlers
from cloud_service.server import CloudServer
from cloud_service.services.container import CloudServices
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from tests.integration.conftest import StartCloud

pytestmark = pytest.mark.integration

TANDEM = pb.DESCRIPTOR.services_by_name["Tandem"]
METHODS = [m.name for m in TANDEM.methods]
SECRET = "malformed-tests-fleet-key-32-byt"  # explicit: not the session's, not a default
GARBAGE = {
    "truncated field": b"\x0a\x7fshort",  # field 1 declares 127 bytes, 5 follow
    "field number 0": b"\x00\x01",
    "overlong varint": b"\x08" + b"\xff" * 11,
    "bad UTF-8 in device_id": b"\x0a\x02\xff\xfe",  # every request's field 1 is a string
}


def identity(data: bytes) -> bytes:
    return data


def raw_call(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    """A caller of `method` that sends the given bytes as the body and returns the raw reply."""
    path = f"/{TANDEM.full_name}/{method}"
    return channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)


def requests_counted(method: str, code: str) -> float:
    labels = {"method": method, "transport": "grpc", "code": code}
    return REGISTRY.get_sample_value("tandem_cloud_requests_total", labels) or 0.0


def redis_state(url: str) -> dict[object, object]:
    """Every key of the database with its serialized value."""
    client = redis.Redis.from_url(url)
    try:
        return {key: client.dump(key) for key in sorted(client.keys("*"))}
    finally:
        client.close()


def honest_calls(stub: pb_grpc.TandemStub, services: CloudServices) -> None:
    """A recommendation and an event report that the server answers normally."""
    meta = [("x-device-token", services.auth.token_for("honest"))]
    reply = stub.Recommend(pb.RecommendRequest(device_id="honest", k=5), metadata=meta, timeout=5)
    assert len(reply.items) == 5
    events = pb.ReportEventsRequest(
        device_id="honest", events=[pb.Event(item_id=1, action=pb.CLICK)]
    )
    assert stub.ReportEvents(events, metadata=meta, timeout=5).accepted == 1


def start_with_secret(
    start_cloud: StartCloud, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> tuple[CloudServer, CloudServices]:
    """A replica whose device tokens are checked against SECRET, set explicitly."""
    monkeypatch.setenv("CLOUD_AUTH_SECRET", SECRET)
    server, services = start_cloud(**overrides)
    assert services.settings.requests.auth_secret.get_secret_value() == SECRET
    return server, services


@pytest.fixture()
def cloud(
    start_cloud: StartCloud, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[CloudServer, CloudServices, grpc.Channel]]:
    server, services = start_with_secret(start_cloud, monkeypatch)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield server, services, channel


@pytest.mark.parametrize("method", METHODS)
def test_a_malformed_body_is_invalid_argument_and_changes_nothing(
    cloud: tuple[CloudServer, CloudServices, grpc.Channel], redis_url: str, method: str
) -> None:
    _, services, channel = cloud
    message = TANDEM.methods_by_name[method].input_type.name
    meta = [("x-device-token", services.auth.token_for("hostile"))]
    before, counted = redis_state(redis_url), requests_counted(method, "INVALID_ARGUMENT")
    for kind, body in GARBAGE.items():
        with pytest.raises(grpc.RpcError) as err:
            raw_call(channel, method)(body, metadata=meta, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kind
        assert err.value.details().startswith(f"malformed {message}: "), kind
    assert redis_state(redis_url) == before
    assert requests_counted(method, "INVALID_ARGUMENT") == counted + len(GARBAGE)
    honest_calls(pb_grpc.TandemStub(channel), services)


def test_a_well_formed_raw_body_still_reaches_the_servicer(
    cloud: tuple[CloudServer, CloudServices, grpc.Channel],
) -> None:
    _, services, channel = cloud
    meta = [("x-device-token", services.auth.token_for("raw"))]
    body = pb.RecommendRequest(device_id="raw", k=3).SerializeToString()
    reply = pb.RecommendResponse.FromString(raw_call(channel, "Recommend")(body, metadata=meta))
    assert len(reply.items) == 3


def test_a_request_over_the_receive_limit_is_resource_exhausted_and_the_server_goes_on(
    start_cloud: StartCloud, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    limit = 64 * 1024
    server, services = start_with_secret(start_cloud, monkeypatch, grpc_max_receive_bytes=limit)
    assert services.settings.transport.grpc_max_receive_bytes == limit
    event = pb.Event(item_id=1, action=pb.CLICK)
    oversize = pb.ReportEventsRequest(device_id="big", events=[event] * (limit // 4))
    assert oversize.ByteSize() > limit
    meta = [("x-device-token", services.auth.token_for("big"))]
    before = redis_state(redis_url)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.TandemStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ReportEvents(oversize, metadata=meta, timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(limit) in err.value.details()
        assert redis_state(redis_url) == before
        honest_calls(stub, services)


def test_every_tandem_method_is_unary_and_a_streaming_one_is_refused_at_start_up() -> None:
    assert not [m.name for m in TANDEM.methods if m.client_streaming or m.server_streaming]
    with pytest.raises(TypeError, match=r"grpc\.health\.v1\.Health\.Watch streams"):
        method_handlers(health.HealthServicer(), health_pb2.DESCRIPTOR.services_by_name["Health"])
