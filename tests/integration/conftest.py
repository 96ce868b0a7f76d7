"""Fixtures for the cloud service: tiny real artifacts, and a started server on port 0."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from cloud_service.build import build_services
from cloud_service.server import CloudServer
from cloud_service.services.container import CloudServices
from cloud_service.settings import CloudSettings
from device_agent.build import build_agent
from device_agent.server import AgentServer
from device_agent.settings import DeviceSettings
from tandem_core.settings import env_names, settings_groups
from tests.integration.redis_cluster import redis_cluster_server, redis_cluster_url  # noqa: F401
from training.tiny import ArtifactDirs

SettingsT = TypeVar("SettingsT", bound=BaseModel)


def from_variables(cls: type[SettingsT], prefix: str, **values: Any) -> SettingsT:
    """Settings whose values are named like their variables without the prefix (`fl_round_s`
    for CLOUD_FL_ROUND_S, `train` for DEVICE_TRAIN); every other field from the environment."""
    where = {name.removeprefix(prefix).lower(): at for name, at in env_names(cls).items()}
    fields: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key not in where:
            raise TypeError(f"{cls.__name__} reads no variable {prefix}{key.upper()}")
        group, field = where[key]
        fields.setdefault(group, {})[field] = value
    groups = settings_groups(cls)
    return cls(**{group: groups[group](**kw) for group, kw in fields.items()})


def cloud_settings(artifacts: ArtifactDirs, redis_url: str, **overrides: Any) -> CloudSettings:
    """Overrides are named like the variables: `budget_rate` for CLOUD_BUDGET_RATE."""
    base: dict[str, Any] = {
        "redis_url": redis_url, "bundle_dir": artifacts.bundle,
        "device_model_dir": artifacts.device,
        "release_public_key_file": artifacts.public_key, "grpc_port": 0, "http_port": 0,
        "redis_socket_timeout_s": 0.2, "redis_open_circuit_s": 0.3, "shutdown_grace_s": 0.5,
        "budget_rate": 10_000.0, "budget_burst": 10_000.0,
    }  # fmt: skip
    return from_variables(CloudSettings, "CLOUD_", **{**base, **overrides})


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
        server = CloudServer(services, settings.transport.host, 0, 0)
        server.start()
        started.append(server)
        return server, services

    yield start
    for server in started:
        server.stop(grace_s=0.2)


@pytest.fixture()
def start_agent(tiny_artifacts: ArtifactDirs) -> Iterator[Any]:
    started: list[AgentServer] = []

    def start(cloud_port: int, **overrides: Any) -> tuple[str, AgentServer]:
        """Overrides are named like the variables: `request_budget` for DEVICE_REQUEST_BUDGET."""
        settings = from_variables(
            DeviceSettings, "DEVICE_", cloud_target=f"127.0.0.1:{cloud_port}", http_port=0,
            cloud_deadline_ms=500,
            **{"release_public_key_file": tiny_artifacts.public_key, **overrides},
        )  # fmt: skip
        server = AgentServer(build_agent(settings), settings.agent.host, 0)
        server.start()
        started.append(server)
        return f"http://127.0.0.1:{server.port}", server

    yield start
    for server in started:
        server.stop()
