"""The events pipeline on real servers and a real Redis: agent → ReportEvents → stream → logs."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis

from cloud_service.server import CloudServer
from cloud_service.store.keys import Keys
from device_agent.policy.features import FEATURES
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from simulator.loaders import load_taobao_user_behavior
from tests.credentials import app_post
from tests.integration.conftest import StartCloud
from training.event_logs import GROUP, LogWriter, consume, ensure_group, user_id
from training.policy.fleet_logs import decision_rows

pytestmark = pytest.mark.integration
FAST = {"events_interval_ms": 20, "events_deadline_ms": 300, "events_retry_max_s": 0.2}


def stream(redis_url: str) -> list[dict[bytes, bytes]]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [fields for _, fields in client.xrange(Keys().events())]
    finally:
        client.close()


def wait_for(check: Any, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.02)


def app_step(url: str, device: str, step: int) -> list[int]:
    page = app_post(f"{url}/v1/recommend", json={"device_id": device, "k": 4}, timeout=5)
    assert page.status_code == 200, page.text
    items = [it["item_id"] for it in page.json()["items"]]
    events = [{"item_id": i, "action": "exposure", "timestamp_ms": 1000 * step + j}
              for j, i in enumerate(items)]  # fmt: skip
    events.append({"item_id": items[0], "action": "click", "timestamp_ms": 1000 * step + 9})
    r = app_post(f"{url}/v1/events", json={"device_id": device, "events": events}, timeout=5)
    assert r.status_code == 200, r.text
    return items


def test_agent_events_arrive_once_even_across_a_cloud_outage(
    start_cloud: StartCloud, start_agent: Any, redis_url: str
) -> None:
    cloud, services = start_cloud()
    url, agent = start_agent(cloud.grpc_port, model_poll_s=1000.0, **FAST)
    for step in range(3):
        app_step(url, "ph-1", step)
    wait_for(lambda: len(stream(redis_url)) == 15)

    port = cloud.grpc_port
    cloud.stop(grace_s=0.1)  # the cloud goes away; the app keeps going, served from the pool
    for step in range(3, 6):
        t0 = time.monotonic()
        app_step(url, "ph-1", step)
        assert time.monotonic() - t0 < 2.0  # never waits on the dead cloud for long
    time.sleep(0.5)  # several failed attempts of the same batches
    assert agent.agent.forwarder.queued() == 15
    back = CloudServer(services, "127.0.0.1", port, 0)
    back.start()
    try:
        wait_for(lambda: len(stream(redis_url)) >= 30)
        time.sleep(0.3)
        entries = stream(redis_url)
        assert len(entries) == 30  # every event once
        keys = [(e[b"ts"], e[b"action"]) for e in entries]
        assert len(set(keys)) == 30
        exposure = next(e for e in entries if e[b"action"] == b"exposure")
        assert exposure[b"source"] in (b"cloud", b"local") and exposure[b"batch"]
        assert float(exposure[b"propensity"]) == 1.0
        # the page counter and the features the decision was made on (set by service.py)
        assert int(exposure[b"step"]) >= 1
        assert len(exposure[b"features"].split()) == len(FEATURES)
        status = httpx.get(f"{url}/v1/status", timeout=5).json()["events_forwarding"]
        assert status["sent"] == 30 and status["queued"] == 0 and status["dropped"] == 0
    finally:
        back.stop(grace_s=0.1)


def test_a_batch_whose_answer_was_lost_is_retried_and_stored_once(
    start_cloud: StartCloud, start_agent: Any, redis_url: str
) -> None:
    """Redis pauses writes past the agent's deadline: the cloud stores the batch after the agent
    gave up; the agent's retry (same batch id) is answered as a duplicate."""
    cloud, _ = start_cloud(redis_socket_timeout_s=2.0)  # the cloud outwaits the pause
    fast = {**FAST, "events_deadline_ms": 100}
    url, agent = start_agent(cloud.grpc_port, model_poll_s=1000.0, **fast)
    app_step(url, "ph-2", 0)
    wait_for(lambda: len(stream(redis_url)) == 5)
    client = redis.Redis.from_url(redis_url)
    events = [{"item_id": 1, "action": "exposure", "timestamp_ms": 5000 + i} for i in range(5)]
    client.execute_command("CLIENT", "PAUSE", 500, "WRITE")
    r = app_post(f"{url}/v1/events", json={"device_id": "ph-2", "events": events}, timeout=5)
    assert r.status_code == 200  # the app never waits on the log
    forwarder = agent.agent.forwarder
    wait_for(lambda: forwarder.queued() == 0)
    assert len(stream(redis_url)) == 10  # once, though sent more than once
    assert forwarder.duplicates >= 1 and forwarder.sent == 10
    client.close()


def test_a_retried_batch_id_is_stored_once(start_cloud: StartCloud, redis_url: str) -> None:
    cloud, services = start_cloud()
    stub = pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{cloud.grpc_port}"))
    meta = [("x-device-token", services.auth.token_for("d1"))]
    events = [pb.Event(item_id=i, action=pb.EXPOSURE, timestamp_ms=i, position=i) for i in range(4)]
    request = pb.ReportEventsRequest(device_id="d1", events=events, batch_id="b-42")
    first = stub.ReportEvents(request, metadata=meta, timeout=5)
    again = stub.ReportEvents(request, metadata=meta, timeout=5)
    assert (first.accepted, first.duplicate) == (4, False)
    assert (again.accepted, again.duplicate) == (4, True)
    rest = httpx.post(
        f"http://127.0.0.1:{cloud.http_port}/v1/events",
        json={"device_id": "d1", "batch_id": "b-42",
              "events": [{"item_id": 1, "action": "click", "timestamp_ms": 1}]},
        headers={"x-device-token": services.auth.token_for("d1")}, timeout=5,
    ).json()  # fmt: skip
    assert rest["duplicate"] is True
    assert len(stream(redis_url)) == 4


@pytest.mark.parametrize(
    "bad",
    [
        {"n": 6},  # over the batch limit
        {"value": math.nan},
        {"threshold": math.inf},
        {"propensity": 1.5},
        {"source": "elsewhere"},
        {"batch_id": "{slot}"},
        {"features": [0.0] * 33},
        {"features": [0.5, math.nan]},
        {"features": [1e7]},
        {"step": 10**9 + 1},
    ],
)
def test_a_bad_batch_is_refused_and_stores_nothing(
    start_cloud: StartCloud, redis_url: str, bad: dict[str, Any]
) -> None:
    cloud, services = start_cloud(max_events=5)
    stub = pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{cloud.grpc_port}"))
    meta = [("x-device-token", services.auth.token_for("d1"))]
    decision = ("value", "threshold", "propensity", "source", "features", "step")
    fields = {k: v for k, v in bad.items() if k in decision}
    events = [
        pb.Event(item_id=i, action=pb.EXPOSURE, timestamp_ms=i, **fields)
        for i in range(bad.get("n", 2))
    ]
    request = pb.ReportEventsRequest(device_id="d1", events=events,
                                     batch_id=bad.get("batch_id", "b-1"))  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:
        stub.ReportEvents(request, metadata=meta, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    client = redis.Redis.from_url(redis_url)
    assert client.keys("*events*") == []  # neither events nor a batch claim
    client.close()


@pytest.mark.parametrize(
    "bad", [{"features": [0.0] * 33}, {"features": [0.5, math.nan]}, {"features": [1e7]},
            {"step": 10**9 + 1}, {"step": -1}],
)  # fmt: skip
def test_a_bad_rest_batch_is_a_422_and_stores_nothing(
    start_cloud: StartCloud, redis_url: str, bad: dict[str, Any]
) -> None:
    cloud, services = start_cloud()
    events = [{"item_id": 1, "action": "exposure", "timestamp_ms": 1, **bad}]
    body = json.dumps({"device_id": "d1", "batch_id": "b-1", "events": events})  # NaN as NaN
    r = httpx.post(
        f"http://127.0.0.1:{cloud.http_port}/v1/events", content=body,
        headers={"x-device-token": services.auth.token_for("d1"),
                 "content-type": "application/json"}, timeout=5,
    )  # fmt: skip
    assert r.status_code == 422, r.text
    assert ("features" in r.text) if "features" in bad else ("step" in r.text)
    client = redis.Redis.from_url(redis_url)
    assert client.keys("*events*") == []
    client.close()


def test_the_consumer_writes_taobao_logs_and_acks(
    start_cloud: StartCloud, redis_url: str, tmp_path: Path
) -> None:
    cloud, services = start_cloud()
    stub = pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{cloud.grpc_port}"))
    for device in ("ph-a", "7"):
        meta = [("x-device-token", services.auth.token_for(device))]
        events = [
            pb.Event(item_id=i, action=[pb.EXPOSURE, pb.CLICK, pb.PURCHASE][i % 3],
                     timestamp_ms=5000 + i, position=i % 4, source="local", value=0.5,
                     threshold=0.25, propensity=1.0)
            for i in range(9)
        ]  # fmt: skip
        request = pb.ReportEventsRequest(device_id=device, events=events, batch_id="b")
        stub.ReportEvents(request, metadata=meta, timeout=5)
    client = redis.Redis.from_url(redis_url)
    ensure_group(client, Keys().events(), GROUP)  # a first run read 3 entries, then crashed
    client.xreadgroup(GROUP, "logs-0", {Keys().events(): ">"}, count=3)
    writer = LogWriter(tmp_path, rows_per_file=5, max_files=3)
    assert consume(client, Keys().events(), writer, count=4) == 18  # the 3 re-delivered too
    assert consume(client, Keys().events(), writer) == 0  # everything was acked
    assert client.xpending(Keys().events(), "training-logs")["pending"] == 0
    parts = sorted(tmp_path.glob("decisions-*.csv"))
    assert len(parts) == 3  # 18 rows in parts of 5: four parts, the oldest deleted
    log = load_taobao_user_behavior(sorted(tmp_path.glob("user_behavior-*.csv"))[-1])
    assert set(log.behavior.tolist()) <= {0, 1}  # pv, buy
    assert set(log.user_id.tolist()) <= {user_id("ph-a"), 7}
    header = parts[-1].read_text().splitlines()[0].split(",")
    assert header[:4] == ["entry_id", "device", "user_id", "item_id"] and "propensity" in header
    client.close()


def test_logged_decisions_become_policy_rows(
    start_cloud: StartCloud, redis_url: str, tmp_path: Path
) -> None:
    """ReportEvents → stream → consumer CSV → fleet_logs: each page's features and step come
    back as one row, with its reward over the horizon and the pages until the next request."""
    cloud, services = start_cloud()
    stub = pb_grpc.TandemStub(grpc.insecure_channel(f"127.0.0.1:{cloud.grpc_port}"))
    meta = [("x-device-token", services.auth.token_for("ph-f"))]
    pages = [  # (step, asked, the page's clicks and purchases)
        (1, True, [pb.CLICK]), (2, False, [pb.PURCHASE]), (3, False, [pb.CLICK, pb.CLICK]),
    ]  # fmt: skip
    for step, asked, actions in pages:
        events = [
            pb.Event(item_id=i, action=a, timestamp_ms=100 * step + i, position=i,
                     source="cloud" if asked else "local", asked_cloud=asked, propensity=1.0,
                     features=[0.5 * step, float(step)], step=step)
            for i, a in enumerate([pb.EXPOSURE, pb.EXPOSURE, *actions])
        ]  # fmt: skip
        request = pb.ReportEventsRequest(device_id="ph-f", events=events, batch_id=f"p{step}")
        stub.ReportEvents(request, metadata=meta, timeout=5)
    first = stream(redis_url)[0]
    assert first[b"features"] == b"0.5 1" and first[b"step"] == b"1"
    client = redis.Redis.from_url(redis_url)
    assert consume(client, Keys().events(), LogWriter(tmp_path, 1000, 3)) == 10
    client.close()
    rows = decision_rows(sorted(tmp_path.glob("decisions-*.csv")), horizon=2)
    assert rows.step.tolist() == [1, 2] and rows.dropped == 1
    assert rows.x.tolist() == [[0.5, 1.0], [1.0, 2.0]]
    assert rows.y.tolist() == [1 + (1 + 3), (1 + 3) + 2]  # a purchase was a click too
    assert rows.forced.tolist() == [True, False] and rows.censored.tolist() == [True, True]
    assert rows.dwell.tolist() == [3, 2]
