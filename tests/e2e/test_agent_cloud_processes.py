"""Cloud and agent as real processes on a real Redis: kill the cloud, the agent keeps answering."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from localrun.processes import start_child
from localrun.redis_server import free_port
from tests.credentials import APP_SECRET, TOKEN_SECRET, app_post
from training.tiny import ArtifactDirs

pytestmark = pytest.mark.e2e
SECRET = TOKEN_SECRET


def page(agent: str, device: str) -> dict:
    reply = app_post(f"{agent}/v1/recommend", json={"device_id": device, "k": 4}, timeout=5)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def test_agent_survives_a_dead_cloud_and_uses_it_again_after_restart(
    tiny_artifacts: ArtifactDirs, redis_url: str, tmp_path: Path
) -> None:
    grpc_port = free_port()
    cloud_env = {
        "CLOUD_REDIS_URL": redis_url, "CLOUD_GRPC_PORT": str(grpc_port), "CLOUD_HTTP_PORT": "0",
        "CLOUD_BUNDLE_DIR": str(tiny_artifacts.bundle), "CLOUD_AUTH_SECRET": SECRET,
        "CLOUD_DEVICE_MODEL_DIR": str(tiny_artifacts.device),
        "CLOUD_RELEASE_PUBLIC_KEY_FILE": str(tiny_artifacts.public_key),
    }  # fmt: skip
    agent_env = {
        "DEVICE_CLOUD_TARGET": f"127.0.0.1:{grpc_port}", "DEVICE_HTTP_PORT": "0",
        "DEVICE_RELEASE_PUBLIC_KEY_FILE": str(tiny_artifacts.public_key),
        "DEVICE_TOKEN_SECRET": SECRET, "DEVICE_APP_SECRET": APP_SECRET,
        "DEVICE_REQUEST_BUDGET": "1.0",
        "DEVICE_PACER_BURST": "1000", "DEVICE_CLOUD_DEADLINE_MS": "150",
    }  # fmt: skip
    cloud = start_child("cloud", "cloud_service.main", cloud_env, tmp_path, tmp_path / "c.log")
    agent_child = start_child("agent", "device_agent.main", agent_env, tmp_path, tmp_path / "a.log")
    agent = f"http://127.0.0.1:{agent_child.ports['http']}"
    try:
        assert page(agent, "phone-a")["source"] == "cloud"
        cloud.kill()  # SIGKILL: no goodbye
        after = [page(agent, "phone-a") for _ in range(4)]
        assert all(p["source"] == "local" for p in after)
        assert all(len(p["items"]) == 4 for p in after)  # served from the cached pool
        cold = page(agent, "phone-b")  # a new phone while the cloud is down
        assert cold["source"] == "local" and cold["items"]
        cloud = start_child("cloud", "cloud_service.main", cloud_env, tmp_path, tmp_path / "c.log")
        deadline = time.monotonic() + 15
        sources = []
        while "cloud" not in sources and time.monotonic() < deadline:
            sources.append(page(agent, f"phone-c{len(sources)}")["source"])
            time.sleep(0.1)
        assert "cloud" in sources  # the agent's channel reconnects by itself
        status = httpx.get(f"{agent}/v1/status", timeout=5).json()
        assert status["outcomes"].get("unavailable", 0) + status["outcomes"].get("timeout", 0) > 0
    finally:
        assert agent_child.stop() == 0
        cloud.stop()
