"""When Redis dies the cloud still answers (degraded), and recovers by itself when it returns."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import httpx
import pytest

from localrun.processes import stop_process
from localrun.redis_server import start_redis_server
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from tests.integration.conftest import StartCloud

pytestmark = pytest.mark.integration


def test_redis_down_degrades_then_recovers(start_cloud: StartCloud, tmp_path: Path) -> None:
    proc, url, _ = start_redis_server(tmp_path, appendonly=False)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server, services = start_cloud(redis_url=url, budget_rate=1000.0, budget_burst=1000.0)
    stub = pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    meta = [("x-device-token", services.auth.token_for("r1"))]
    http = f"http://127.0.0.1:{server.http_port}"
    click = [pb.Behavior(item_id=5, action=pb.CLICK, timestamp_ms=1)]
    events = pb.ReportEventsRequest(device_id="r1", events=[pb.Event(item_id=1, action=pb.CLICK)])

    healthy = stub.Recommend(pb.RecommendRequest(device_id="r1", k=6, recent=click), metadata=meta)
    assert not healthy.degraded
    stop_process(proc)
    try:
        start = time.monotonic()
        for _ in range(5):  # every call answers, from the request's own behaviour
            reply = stub.Recommend(
                pb.RecommendRequest(device_id="r1", k=6, recent=click), metadata=meta, timeout=5
            )
            assert reply.degraded and len(reply.items) == 6
        cold = stub.Recommend(pb.RecommendRequest(device_id="r1", k=6), metadata=meta, timeout=5)
        assert cold.degraded and len(cold.items) == 6  # no behaviour, no session: popular items
        assert time.monotonic() - start < 5  # the breaker skips the dead Redis, no timeout pile-up
        ready = httpx.get(f"{http}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        with pytest.raises(grpc.RpcError) as err:  # events cannot be stored: refused, not lost
            stub.ReportEvents(events, metadata=meta, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc, _, _ = start_redis_server(tmp_path, port=port, appendonly=False)
    try:
        deadline = time.monotonic() + 10
        while True:  # recovery needs no restart of the service
            reply = stub.Recommend(pb.RecommendRequest(device_id="r1", k=6), metadata=meta)
            if not reply.degraded or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not reply.degraded
        assert httpx.get(f"{http}/readyz", timeout=5).json()["status"] == "ready"
        assert stub.ReportEvents(events, metadata=meta, timeout=5).accepted == 1
    finally:
        stop_process(proc)
