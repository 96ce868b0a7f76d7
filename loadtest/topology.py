"""The load test's system as plain processes: cloud and device agents on a real Redis."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localrun import topology
from localrun.processes import Child, start_child, stop_process
from localrun.run_secrets import TOKEN_SECRET
from simulator.world import WorldConfig

SECRET = TOKEN_SECRET  # random each run


@dataclass(frozen=True)
class ModelPaths:
    bundle: Path
    device: Path
    value_model: Path | None
    world: WorldConfig
    scale: str  # the name in simulator.scales the locust users rebuild the world from
    public_key: Path | None = None  # the release public key the servers trust


def cloud_env(models: ModelPaths, redis_url: str, cloud_rate: float) -> dict[str, str]:
    return topology.cloud_env(models, redis_url, SECRET, cloud_rate, "loadtest")


def agent_env(models: ModelPaths, cloud_grpc: int, budget: float, name: str) -> dict[str, str]:
    return topology.agent_env(models, cloud_grpc, SECRET, "value", name, budget)


@dataclass
class Processes:
    """Every child this run started, so that all of them are stopped, even on error."""

    workdir: Path
    children: list[Child] = field(default_factory=list)
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
            self.pids[name] = proc.pid
            try:
                return proc.wait(timeout=timeout_s)
            finally:
                stop_process(proc, 10)

    def stop_all(self) -> None:
        self.stop(list(self.children))
