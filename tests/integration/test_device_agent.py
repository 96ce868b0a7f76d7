"""The device agent's REST API against a real cloud (gRPC on port 0) and a real Redis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem_core.release import resolve
from tandem_core.signing import Signer
from tests.credentials import app_post
from tests.integration.conftest import StartCloud
from training.tiny import release_tiny_reranker

pytestmark = pytest.mark.integration


def feed(url: str, device: str, steps: int, click_every: int = 3) -> list[dict]:
    pages = []
    for step in range(steps):
        page = app_post(f"{url}/v1/recommend", json={"device_id": device, "k": 4}, timeout=5)
        assert page.status_code == 200, page.text
        body = page.json()
        pages.append(body)
        events = [
            {"item_id": it["item_id"], "timestamp_ms": 1000 * step + j,
             "action": "click" if (step + j) % click_every == 0 else "exposure"}
            for j, it in enumerate(body["items"])
        ]  # fmt: skip
        if events:
            r = app_post(f"{url}/v1/events", json={"device_id": device, "events": events})
            assert r.status_code == 200
    return pages


def test_agent_serves_pages_from_its_pool_and_asks_the_cloud_first(
    start_cloud: StartCloud, start_agent: Any
) -> None:
    cloud, services = start_cloud()
    url, _ = start_agent(cloud.grpc_port, request_budget=0.0, initial_threshold=1e9,
                         exploration=0.0)  # never asks again
    pages = feed(url, "phone-1", steps=6)
    assert pages[0]["source"] == "cloud" and pages[0]["decision"]["outcome"] == "initial"
    assert all(p["source"] == "local" for p in pages[1:])
    shown = [it["item_id"] for p in pages for it in p["items"]]
    assert len(shown) == 24 and len(set(shown)) == 24  # no item twice in a session
    assert pages[1]["model_version"].startswith("edgerec-")  # the registry's model re-ranks
    status = httpx.get(f"{url}/v1/status").json()
    assert status["steps"] == 6 and status["cloud_requests"] == 0
    served = services.device_models.registries["reranker"].current()
    assert served is not None and status["reranker_version"] == served.version


def test_budget_paces_cloud_requests(start_cloud: StartCloud, start_agent: Any) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port, request_budget=1.0, pacer_burst=100.0)
    pages = feed(url, "phone-2", steps=8, click_every=2)
    asked = [p["decision"]["asked_cloud"] for p in pages[1:]]
    assert any(asked)  # with a full budget and λ = 0 any positive value asks
    assert any(p["source"] == "cloud" for p in pages[1:])


def test_a_dead_cloud_never_fails_the_app(start_cloud: StartCloud, start_agent: Any) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port, request_budget=1.0, pacer_burst=100.0)
    feed(url, "phone-3", steps=2)
    cloud.stop(grace_s=0)
    pages = feed(url, "phone-3", steps=5, click_every=1)
    assert all(p["source"] == "local" for p in pages)
    assert sum(len(p["items"]) for p in pages) > 0
    outcomes = {p["decision"]["outcome"] for p in pages}
    assert outcomes & {"unavailable", "timeout", "kept"}
    fresh = app_post(f"{url}/v1/recommend", json={"device_id": "phone-new", "k": 4}).json()
    assert fresh["source"] == "local" and len(fresh["items"]) == 4  # others' list as fallback


def test_throttling_raises_the_threshold(start_cloud: StartCloud, start_agent: Any) -> None:
    cloud, _ = start_cloud(budget_rate=0.01, budget_burst=1.0)  # one call, then 429s
    url, _ = start_agent(cloud.grpc_port, request_budget=1.0, pacer_burst=100.0)
    pages = feed(url, "phone-4", steps=6, click_every=1)
    throttled = [p for p in pages if p["decision"]["outcome"] == "throttled"]
    assert throttled and all(p["source"] == "local" for p in throttled)
    assert pages[-1]["decision"]["threshold"] > 0  # 429 backs the pacer off


def test_bad_app_input_is_refused(start_cloud: StartCloud, start_agent: Any) -> None:
    cloud, _ = start_cloud()
    url, _ = start_agent(cloud.grpc_port)
    bad = [
        ("/v1/recommend", {"device_id": "p", "k": 0}),
        ("/v1/recommend", {"device_id": "p{x}", "k": 2}),
        ("/v1/events", {"device_id": "p", "events": []}),
        ("/v1/events", {"device_id": "p", "events": [{"item_id": -1, "action": "click",
                                                      "timestamp_ms": 1}]}),
        ("/v1/events", {"device_id": "p", "events": [{"item_id": 1, "action": "like",
                                                      "timestamp_ms": 1}]}),
    ]  # fmt: skip
    for path, body in bad:
        assert app_post(f"{url}{path}", json=body).status_code == 422, body
    assert httpx.get(f"{url}/v1/status").json()["devices"] == 0  # nothing was created


def test_new_model_is_swapped_in_and_a_tampered_one_refused(
    start_cloud: StartCloud, start_agent: Any, tiny_artifacts: Any, tmp_path: Path
) -> None:
    device_dir = tmp_path / "reranker"
    shutil.copytree(tiny_artifacts.device, device_dir)
    cloud, services = start_cloud(device_model_dir=device_dir)
    url, agent = start_agent(cloud.grpc_port, model_poll_s=3600)
    first = agent.agent.reranker.version
    version_dir = resolve(device_dir)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    # a tampered copy on the agent's side: refused, the old model keeps serving
    data = (version_dir / manifest["file"]).read_bytes()
    digest = manifest["sha256"][manifest["file"]]
    assert not agent.agent.reranker.install(data + b"x", digest, "evil")
    assert agent.agent.reranker.version == first
    # a new signed version made current in the registry: fetched, verified, swapped
    signer = Signer.from_file(tiny_artifacts.private_key)
    v2 = release_tiny_reranker(
        device_dir, signer, tiny_artifacts.embedding_version, tiny_artifacts.dim, seed=7
    )
    feed(url, "phone-5", steps=2)
    assert agent.agent.reranker.refresh(agent.agent.cloud, "agent-0", timeout_s=5)
    page = app_post(f"{url}/v1/recommend", json={"device_id": "phone-5", "k": 4}).json()
    assert page["model_version"] == v2 != first
    assert services is not None
