"""The agent's REST API against hostile apps: tokens per device, body limit, schema bounds."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from protos.auth import APP_KID, device_token, mint_token
from tests.credentials import APP_SECRET, APP_TOKENS, TOKEN_SECRET, app_post
from tests.integration.conftest import StartCloud

pytestmark = pytest.mark.integration


def page(url: str, device: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/recommend", json={"device_id": device, "k": 4}, headers=headers, timeout=5
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def devices(url: str) -> int:
    return int(httpx.get(f"{url}/v1/status", timeout=5).json()["devices"])


def test_only_the_devices_own_token_opens_its_session(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port, exploration=0.0)
    now = int(time.time())
    refused = {
        "no header": {},
        "not bearer": {"Authorization": f"Basic {APP_TOKENS.minter('victim')}"},
        "malformed": bearer("v2.a0.123.nothex"),
        "another device's": APP_TOKENS.header("attacker"),
        "the fleet key's (cloud tokens)": bearer(device_token(TOKEN_SECRET.encode(), "victim")),
        "another kid": bearer(device_token(APP_SECRET.encode(), "victim", kid="k0")),
        "expired": bearer(mint_token(APP_SECRET.encode(), "victim", APP_KID, now - 3600)),
        "too far ahead": bearer(mint_token(APP_SECRET.encode(), "victim", APP_KID, now + 10**8)),
    }
    for name, headers in refused.items():
        r = page(url, "victim", headers)
        assert r.status_code == 401, (name, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and r.json()["detail"], name
    events = {"device_id": "victim", "events": [{"item_id": 1, "action": "click",
                                                 "timestamp_ms": 1}]}  # fmt: skip
    r = httpx.post(f"{url}/v1/events", json=events, headers=APP_TOKENS.header("attacker"))
    assert r.status_code == 401
    assert devices(url) == 0  # nothing refused created a session
    ok = page(url, "victim", APP_TOKENS.header("victim"))
    assert ok.status_code == 200 and len(ok.json()["items"]) == 4


def test_no_credentials_is_401_whatever_the_body_holds(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port)
    json_type = {"content-type": "application/json"}
    for body in (b"{not json", b"\x80\xff", b'{"device_id": "p", "k": NaN}', b'{"k": "x"}'):
        r = httpx.post(f"{url}/v1/recommend", content=body, headers=json_type, timeout=5)
        assert r.status_code == 401, (body, r.status_code, r.text)  # no schema details leak


def test_unencodable_input_is_a_4xx_not_a_500(start_cloud: StartCloud, start_agent: Any) -> None:
    """A well-formed (even forged) token reaches validation: NaN, 1e999 and undecodable bytes
    were echoed into the 422 body, which cannot encode them (500 before)."""
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port)
    forged = {**bearer("v2.a0.1." + "0" * 64), "content-type": "application/json"}
    bodies = [
        b'{"device_id": "p", "k": NaN}', b'{"device_id": "p", "k": 1e999}',
        b'{"device_id": "p", "events": [{"item_id": Infinity, "action": "click",'
        b' "timestamp_ms": 1}]}',
        b"\x80\xff",
    ]  # fmt: skip
    for path in ("/v1/recommend", "/v1/events"):
        for body in bodies:
            r = httpx.post(f"{url}{path}", content=body, headers=forged, timeout=5)
            assert r.status_code in (400, 422), (path, body, r.status_code, r.text)
            assert "NaN" not in r.text and "Infinity" not in r.text
    assert devices(url) == 0


def test_an_oversized_body_is_413_and_honest_apps_are_served(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port, max_body_bytes=64 * 1024)
    headers = APP_TOKENS.header("big")
    served: list[int] = []

    def honest() -> None:
        for _ in range(20):
            served.append(page(url, "honest", APP_TOKENS.header("honest")).status_code)

    thread = threading.Thread(target=honest)
    thread.start()
    declared = httpx.post(f"{url}/v1/events", content=b"x" * (8 << 20), headers=headers)

    def chunks() -> Any:  # no Content-Length: counted as it streams
        for _ in range(64):
            yield b"[" * 4096

    streamed = httpx.post(f"{url}/v1/events", content=chunks(), headers=headers, timeout=10)
    thread.join()
    assert declared.status_code == 413 and streamed.status_code == 413
    assert served == [200] * 20


def test_schema_bounds_refuse_huge_values(start_cloud: StartCloud, start_agent: Any) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port, max_events=5, max_k=50)
    event = {"item_id": 1, "action": "click", "timestamp_ms": 1}
    bad = [
        ("/v1/recommend", {"device_id": "p", "k": 10**12}),
        ("/v1/recommend", {"device_id": "p", "k": 51}),  # over DEVICE_MAX_K
        ("/v1/recommend", {"device_id": "p\n", "k": 2}),
        ("/v1/events", {"device_id": "p", "events": [{**event, "item_id": 2**63}]}),
        ("/v1/events", {"device_id": "p", "events": [{**event, "timestamp_ms": 2**64}]}),
        ("/v1/events", {"device_id": "p", "events": [event] * 6}),  # over DEVICE_MAX_EVENTS
    ]
    for path, body in bad:
        r = app_post(f"{url}{path}", json=body)
        assert r.status_code in (413, 422), (path, r.status_code)
    assert devices(url) == 0
    assert app_post(f"{url}/v1/events", json={"device_id": "p", "events": [event]}).is_success


def test_the_contracts_batch_cap_holds_whatever_the_settings(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port, max_events=10_000, max_body_bytes=4 << 20)
    event = {"item_id": 1, "action": "click", "timestamp_ms": 1}
    r = app_post(f"{url}/v1/events", json={"device_id": "p", "events": [event] * 10_001})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "too_long"
    assert devices(url) == 0


def test_an_ops_token_closes_metrics_and_status(start_cloud: StartCloud, start_agent: Any) -> None:
    cloud, _ = start_cloud()
    ops = "ops-token-0123456789abcdef"
    url, _ = start_agent(cloud.grpc_port, ops_token=ops)
    for path in ("/metrics", "/v1/status"):
        assert httpx.get(f"{url}{path}", timeout=5).status_code == 401
        assert (
            httpx.get(f"{url}{path}", headers=bearer("wrong-token-0123456789")).status_code == 401
        )
        assert httpx.get(f"{url}{path}", headers=bearer(ops), timeout=5).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200  # probes stay open
