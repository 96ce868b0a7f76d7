"""The embedding-version handshake on real servers: a re-ranker trained on other rows than the
cloud's list is not used; the agent serves the cloud's order and says so in /v1/status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.credentials import app_post
from tests.integration.conftest import StartCloud

pytestmark = pytest.mark.integration


def step(url: str, device: str, t: int) -> dict[str, Any]:
    page = app_post(f"{url}/v1/recommend", json={"device_id": device, "k": 4}, timeout=5)
    assert page.status_code == 200, page.text
    body = page.json()
    events = [{"item_id": it["item_id"], "action": "click", "timestamp_ms": t}
              for it in body["items"][:2]]  # fmt: skip
    assert app_post(f"{url}/v1/events", json={"device_id": device, "events": events}).is_success
    return body


def test_a_stale_reranker_is_not_used_on_newer_rows(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, _ = start_cloud()
    url, server = start_agent(cloud.grpc_port, model_poll_s=1000.0, request_budget=0.0,
                              initial_threshold=1e9, events_forward=False,
                              exploration=0.0)  # fmt: skip
    agent = server.agent
    for t in range(3):
        step(url, "ph-1", t)
    matched = httpx.get(f"{url}/v1/status", timeout=5).json()["handshake"]
    assert matched["mismatched_steps"] == 0
    assert matched["cloud_embedding_version"] == matched["reranker_embedding_version"] != ""

    # the same network, but as if trained on an older embedding table
    model = agent.reranker.current
    stale = agent.cloud.device_model(agent.settings.agent.agent_id, "", timeout_s=5)
    assert agent.reranker.install(stale.onnx_model, stale.sha256, "stale-1", "emb-old")
    session = agent.service.sessions.get("ph-1")
    for t in range(3, 6):
        with session.lock:
            cloud_order = session.pool.items[:4].tolist()
        body = step(url, "ph-1", t)
        assert [it["item_id"] for it in body["items"]] == cloud_order  # not re-ranked
    status = httpx.get(f"{url}/v1/status", timeout=5).json()["handshake"]
    assert status["mismatched_steps"] == 3
    assert status["reranker_embedding_version"] == "emb-old"
    assert status["cloud_embedding_version"] == model.embedding_version
