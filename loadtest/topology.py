"""The load test's system as plain processes: cloud and device agents on a real Redis."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localrun.processes import Child, start_child
from simulator.world import WorldConfig

SECRET = "loadtest-secret-0123456789"


@dataclass(frozen=True)
class ModelPaths:
    bundle: Path
    device: Path
    value_model: Path | None
    world: WorldConfig
    scale: str  # the name in simulator.scales the locust users rebuild the world from


def cloud_env(models: ModelPaths, redis_url: str, cloud_rate: float) -> dict[str, str]:
    return {
        "CLOUD_REDIS_URL": redis_url, "CLOUD_GRPC_PORT": "0", "CLOUD_HTTP_PORT": "0",
        "CLOUD_BUNDLE_DIR": str(models.bundle), "CLOUD_DEVICE_MODEL_DIR": str(models.device),
        "CLOUD_AUTH_SECRET": SECRET, "CLOUD_BUDGET_RATE": str(cloud_rate),
        "CLOUD_BUDGET_BURST": str(cloud_rate), "CLOUD_KEY_PREFIX": "loadtest",
    }  # fmt: skip


def agent_env(models: ModelPaths, cloud_grpc: int, budget: float, name: str) -> dict[str, str]:
    env = {
        "DEVICE_CLOUD_TARGET": f"127.0.0.1:{cloud_grpc}", "DEVICE_HTTP_PORT": "0",
        "DEVICE_TOKEN_SECRET": SECRET, "DEVICE_POLICY": "value", "DEVICE_AGENT_ID": name,
        "DEVICE_REQUEST_BUDGET": str(budget),
        "DEVICE_N_CATEGORIES": str(models.world.n_categories),
        "DEVICE_PAGE_SIZE": str(models.world.page_size),
        "DEVICE_POOL_SIZE": str(models.world.pool_size),
    }  # fmt: skip
    if models.value_model is not None:
        env["DEVICE_VALUE_MODEL"] = str(models.value_model)
    return env


@dataclass
class Processes:
    """Every child this run started, so that all of them are stopped, even on error."""

    workdir: Path
    children: list[Child] = field(default_factory=list)
    tools: list[subprocess.Popen[bytes]] = field(default_factory=list)  # locust, open-loop
    exit_codes: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, module: str, env: dict[str, str]) -> Child:
        child = start_child(name, module, env, self.workdir, self.workdir / f"{name}.log")
        self.children.append(child)
        self.pids[name] = child.proc.pid
        return child

    def start_agents(
        self, models: ModelPaths, cloud_grpc: int, budget: float, n: int, tag: str
    ) -> list[Child]:
        return [
            self.start(
                f"agent-{tag}-{i}",
                "device_agent.main",
                agent_env(models, cloud_grpc, budget, f"agent-{tag}-{i}"),
            )
            for i in range(n)
        ]

    def stop(self, children: list[Child]) -> None:
        for child in reversed(children):
            self.exit_codes[child.name] = child.stop()
            self.children.remove(child)

    def run_tool(
        self, name: str, args: list[str], env: dict[str, str], timeout_s: float, cwd: Path
    ) -> int:
        """Run a tool (locust, the open-loop driver) as its own process; killed on timeout.
        cwd is the repository root: locust puts it on sys.path, so `loadtest.*` imports work."""
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, env=env, stdout=log, stderr=log, cwd=cwd)
            self.tools.append(proc)
            self.pids[name] = proc.pid
            try:
                return proc.wait(timeout=timeout_s)
            finally:
                _end(proc)
                self.tools.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.tools):
            _end(proc)
        self.stop(list(self.children))


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
