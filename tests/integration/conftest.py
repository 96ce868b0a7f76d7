"""Fixtures for the cloud service: tiny real artifacts, and a started server on port 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cloud_service.build import build_services
from cloud_service.server import CloudServer
from cloud_service.services.container import CloudServices
from cloud_service.settings import CloudSettings
from device_agent.build import build_agent
from device_agent.server import AgentServer
from device_agent.settings import DeviceSettings
from training.tiny import ArtifactDirs


def cloud_settings(artifacts: ArtifactDirs, redis_url: str, **overrides: Any) -> CloudSettings:
    base: dict[str, Any] = {
        "redis_url": redis_url, "bundle_dir": artifacts.bundle,
        "device_model_dir": artifacts.device, "grpc_port": 0, "http_port": 0,
        "redis_socket_timeout_s": 0.2, "redis_open_circuit_s": 0.3, "shutdown_grace_s": 0.5,
        "budget_rate": 10_000.0, "budget_burst": 10_000.0,
    }  # fmt: skip
    return CloudSettings(**{**base, **overrides})


StartCloud = Callable[..., tuple[CloudServer, CloudServices]]


@pytest.fixture()
def start_cloud(tiny_artifacts: ArtifactDirs, redis_url: str) -> Iterator[StartCloud]:
    """Start a cloud replica (gRPC + HTTP on port 0); every one started is stopped afterwards."""
    started: list[CloudServer] = []

    def start(**overrides: Any) -> tuple[CloudServer, CloudServices]:
        settings = cloud_settings(
            tiny_artifacts, overrides.pop("redis_url", redis_url), **overrides
        )
        services = build_services(settings)
        server = CloudServer(services, settings.host, 0, 0)
        server.start()
        started.append(server)
        return server, services

    yield start
    for server in started:
        server.stop(grace_s=0.2)


@pytest.fixture()
def start_agent() -> Iterator[Any]:
    started: list[AgentServer] = []

    def start(cloud_port: int, **overrides: Any) -> tuple[str, AgentServer]:
        settings = DeviceSettings(
            cloud_target=f"127.0.0.1:{cloud_port}", http_port=0, cloud_deadline_ms=500,
            **overrides,
        )  # fmt: skip
        server = AgentServer(build_agent(settings), settings.host, 0)
        server.start()
        started.append(server)
        return f"http://127.0.0.1:{server.port}", server

    yield start
    for server in started:
        server.stop()
