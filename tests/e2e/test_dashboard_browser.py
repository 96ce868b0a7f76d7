"""The live dashboard in headless Chromium: cloud and agent as processes, numbers that move."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from cloud_service.auth import device_token
from localrun.processes import start_child
from localrun.redis_server import free_port
from tests.credentials import APP_SECRET, TOKEN_SECRET, app_post
from tests.e2e.headless_chromium import CHROMIUM, HeadlessChromium
from training.tiny import ArtifactDirs

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt chromium)"),
]
SECRET = TOKEN_SECRET


def number(browser: HeadlessChromium, element_id: str) -> float:
    """The number an element shows ('1,234' → 1234), or -1 while it shows none."""
    text = browser.evaluate(f"document.getElementById({element_id!r}).textContent")
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return -1.0


def test_dashboard_shows_live_numbers_without_reload(
    tiny_artifacts: ArtifactDirs, redis_url: str, tmp_path: Path
) -> None:
    grpc_port, agent_port, dead_port = free_port(), free_port(), free_port()
    agent_url = f"http://127.0.0.1:{agent_port}"
    cloud_env = {
        "CLOUD_REDIS_URL": redis_url, "CLOUD_GRPC_PORT": str(grpc_port), "CLOUD_HTTP_PORT": "0",
        "CLOUD_BUNDLE_DIR": str(tiny_artifacts.bundle), "CLOUD_AUTH_SECRET": SECRET,
        "CLOUD_DEVICE_MODEL_DIR": str(tiny_artifacts.device),
        "CLOUD_RELEASE_PUBLIC_KEY_FILE": str(tiny_artifacts.public_key),
        "CLOUD_BUDGET_RATE": "0.01", "CLOUD_BUDGET_BURST": "6",  # 6 calls, then 429s
        "CLOUD_DASHBOARD_AGENTS": json.dumps([agent_url, f"http://127.0.0.1:{dead_port}"]),
    }  # fmt: skip
    agent_env = {
        "DEVICE_CLOUD_TARGET": f"127.0.0.1:{grpc_port}", "DEVICE_HTTP_PORT": str(agent_port),
        "DEVICE_RELEASE_PUBLIC_KEY_FILE": str(tiny_artifacts.public_key),
        "DEVICE_TOKEN_SECRET": SECRET, "DEVICE_APP_SECRET": APP_SECRET,
        "DEVICE_REQUEST_BUDGET": "0",
        "DEVICE_INITIAL_THRESHOLD": "1e9", "DEVICE_EXPLORATION": "0",  # first list only
    }  # fmt: skip
    cloud = start_child("cloud", "cloud_service.main", cloud_env, tmp_path, tmp_path / "c.log")
    agent = start_child("agent", "device_agent.main", agent_env, tmp_path, tmp_path / "a.log")
    http = f"http://127.0.0.1:{cloud.ports['http']}"
    try:
        with HeadlessChromium(tmp_path / "profile") as browser:
            browser.goto(f"{http}/dashboard")
            browser.wait_for("Number(document.body.dataset.polls) >= 1")
            assert number(browser, "recommend-total") in (0, 1)  # the agent's warm-up list
            browser.evaluate("window.sameDocument = true")  # gone if the page were reloaded
            polls = int(browser.evaluate("document.body.dataset.polls"))

            for _ in range(4):  # the app's first page comes from the cloud, then from the pool
                reply = app_post(
                    f"{agent_url}/v1/recommend", json={"device_id": "app", "k": 2}, timeout=10
                )
                assert reply.status_code == 200
            # the bucket had 6 tokens; the agent's warm-up and first list took two: 4 allowed, 4 not
            for i in range(8):
                httpx.post(
                    f"{http}/v1/recommend", json={"device_id": f"web-{i}", "k": 3},
                    headers={"x-device-token": device_token(SECRET.encode(), f"web-{i}")},
                    timeout=10,
                )  # fmt: skip

            browser.wait_for("Number(document.getElementById('recommend-total').textContent) >= 9")
            browser.wait_for("document.getElementById('budget-rejected').textContent !== '0'")
            assert browser.evaluate("window.sameDocument") is True
            assert int(browser.evaluate("document.body.dataset.polls")) > polls
            # the burst, then 429s; an agent call that outran its deadline on a loaded machine
            # still spent a token at the cloud and the agent asked again, so ≥ 3 are refused
            assert number(browser, "budget-allowed") == 6
            assert number(browser, "budget-rejected") >= 4
            browser.wait_for(  # one poll may miss the agent (0.2 s deadline): wait for both
                "document.getElementById('answers-local').textContent === '3' && "
                "document.getElementById('answers-cloud').textContent === '1'"
            )
            agents = browser.evaluate("document.getElementById('agents').innerText")
            assert agent_url in agents and "agent unreachable (refused)" in agents
            assert "stats unavailable" not in browser.evaluate("document.body.innerText")
            browser.screenshot(tmp_path / "dashboard.png")
    finally:
        assert agent.stop() == 0
        assert cloud.stop() == 0
