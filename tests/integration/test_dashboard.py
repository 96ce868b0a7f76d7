"""The dashboard's stats endpoint on a real cloud: its shape, counters that move, dead agents."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cloud_service.api.dashboard import DashboardStats
from cloud_service.services.container import CloudServices
from device_agent.build import build_agent
from device_agent.server import AgentServer
from device_agent.settings import (
    CloudLinkSettings,
    DeviceSettings,
    ModelSettings,
    PacingSettings,
)
from localrun.redis_server import free_port
from tests.credentials import app_post
from tests.integration.conftest import StartCloud
from training.tiny import ArtifactDirs

pytestmark = pytest.mark.integration


def stats(http_port: int) -> DashboardStats:
    reply = httpx.get(f"http://127.0.0.1:{http_port}/v1/dashboard/stats", timeout=5)
    assert reply.status_code == 200, reply.text
    return DashboardStats.model_validate(reply.json())  # the declared response model, strictly


def recommend(http_port: int, services: CloudServices, device: str) -> int:
    reply = httpx.post(
        f"http://127.0.0.1:{http_port}/v1/recommend", json={"device_id": device, "k": 4},
        headers={"x-device-token": services.auth.token_for(device)}, timeout=5,
    )  # fmt: skip
    return reply.status_code


def method(s: DashboardStats, name: str) -> Any:
    return next(m for m in s.requests if m.method == name)


@pytest.fixture()
def black_hole() -> Iterator[str]:
    """An agent that accepts connections and never answers: only the deadline ends the call."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_stats_count_calls_budget_decisions_and_latency(start_cloud: StartCloud) -> None:
    server, services = start_cloud(budget_rate=0.01, budget_burst=3.0)  # 3 calls, then 429s
    page = httpx.get(f"http://127.0.0.1:{server.http_port}/dashboard", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "v1/dashboard/stats" in page.text and "<script src" not in page.text  # self-contained
    before = stats(server.http_port)
    assert before.answers.agents == [] and before.answers.cloud_share is None

    codes = [recommend(server.http_port, services, f"dash-{i}") for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    time.sleep(0.6)  # past the ring's spacing, so the next sample makes a rate
    after = stats(server.http_port)

    rec, rec0 = method(after, "Recommend"), method(before, "Recommend")
    assert (rec.calls - rec0.calls, rec.errors - rec0.errors) == (5, 2)
    assert after.budget.allowed - before.budget.allowed == 3
    assert after.budget.rejected - before.budget.rejected == 2
    assert after.window_s > 0.5 and rec.calls_per_s is not None and rec.calls_per_s > 0
    assert after.budget.rejected_share == pytest.approx(2 / 5)
    assert after.budget.limit_per_s == 0.01 and after.budget.burst == 3.0
    assert after.latency.over_window and after.latency.calls == 5
    assert after.latency.p50_ms is not None and after.latency.p99_ms is not None
    assert 0 < after.latency.p50_ms <= after.latency.p99_ms
    assert after.history and after.history[-1].recommend_per_s > 0
    assert after.history[-1].rejected_per_s > 0


def test_agents_are_summed_and_dead_ones_shown_without_failing(
    start_cloud: StartCloud, black_hole: str, tiny_artifacts: ArtifactDirs
) -> None:
    agent_port, dead = free_port(), f"http://127.0.0.1:{free_port()}"
    live = f"http://127.0.0.1:{agent_port}"
    server, _ = start_cloud(
        dashboard_agents=[live, dead, black_hole], dashboard_agent_timeout_s=0.5
    )
    settings = DeviceSettings(
        cloud=CloudLinkSettings(target=f"127.0.0.1:{server.grpc_port}", deadline_ms=500),
        pacing=PacingSettings(request_budget=0.0, initial_threshold=1e9, exploration=0.0),
        models=ModelSettings(release_public_key_file=tiny_artifacts.public_key),
    )
    agent = AgentServer(build_agent(settings), settings.agent.host, agent_port)
    agent.start()
    try:
        for _ in range(6):
            reply = app_post(f"{live}/v1/recommend", json={"device_id": "p1", "k": 2}, timeout=5)
            assert reply.status_code == 200
        start = time.monotonic()
        s = stats(server.http_port)
        assert time.monotonic() - start < 2.0  # the black hole costs one deadline, not a hang
    finally:
        agent.stop()

    by_url = {a.url: a for a in s.answers.agents}
    assert [a.url for a in s.answers.agents] == [live, dead, black_hole]  # configured order
    assert by_url[live].reachable and by_url[live].devices == 1
    assert (by_url[live].cloud_answers, by_url[live].local_answers) == (1, 5)  # initial, then pool
    assert by_url[dead].error == "agent unreachable (refused)" and not by_url[dead].reachable
    assert by_url[black_hole].error == "agent unreachable (timeout)"
    assert (s.answers.cloud, s.answers.local) == (1, 5)
    assert s.answers.cloud_share == pytest.approx(1 / 6)
