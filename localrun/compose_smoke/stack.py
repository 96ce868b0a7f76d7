"""The compose stack of the smoke: build, up --wait, health, an app request, locust, down -v."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
EXTRAS = ROOT / "deploy" / "build-extras"
SERVICES = ("redis", "cloud", "aggregator", "agent", "agent-train")  # `models` runs first
IMAGES = ("tandem-cloud:local", "tandem-agent:local", "tandem-agent-train:local",
          "tandem-train:local", "tandem-load:local")  # fmt: skip
OFFICIAL_BASES = ("python:3.11-slim", "redis:7.2-alpine")
DEBIAN_BASES = ("tandem-base/python:bookworm", "tandem-base/redis:bookworm")


class StackFailed(RuntimeError):
    """The engine is up but the stack is not healthy, or an app request or the load failed."""


@dataclass(frozen=True)
class Mode:
    """fast: tiny untrained models (CI); full: the default world's trained models (~15 min)."""

    name: str
    models_args: str
    registry: str
    world_scale: str
    locust_users: int
    locust_run_time: str

    @staticmethod
    def of(name: str, users: int | None = None, run_time: str | None = None) -> Mode:
        if name == "fast":
            return Mode("fast", "--untrained", "/models/tiny/registry", "tiny", users or 40,
                        run_time or "30s")  # fmt: skip
        return Mode("full", "", "/models/registry", "default", users or 200, run_time or "2m")


@dataclass
class Stack:
    """One compose project; every call has a deadline, `down()` removes containers + volumes."""

    env: dict[str, str]
    mode: Mode
    project: str = "tandem-smoke"
    budget: float = 0.10
    cluster: bool = False  # the `cluster` profile: the cloud on a 3-master Redis Cluster
    log: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {
            **self.env,
            # generated per run: nothing in deploy/ has a default secret
            "TANDEM_TOKEN_SECRET": secrets.token_urlsafe(32),
            "TANDEM_APP_SECRET": secrets.token_urlsafe(32),
            "TANDEM_MODELS_ARGS": self.mode.models_args,
            "TANDEM_REGISTRY": self.mode.registry,
            "TANDEM_WORLD_SCALE": self.mode.world_scale,
            "TANDEM_DEVICE_BUDGET": str(self.budget),
            "TANDEM_LOCUST_USERS": str(self.mode.locust_users),
            "TANDEM_LOCUST_SPAWN_RATE": str(max(1, self.mode.locust_users // 5)),
            "TANDEM_LOCUST_RUN_TIME": self.mode.locust_run_time,
        }
        if self.cluster:
            self.env["TANDEM_REDIS_CLUSTER"] = "true"
            self.env["TANDEM_REDIS_URL"] = "redis://redis-node:6379/0"

    @property
    def profiles(self) -> tuple[str, ...]:
        return ("--profile", "cluster") if self.cluster else ()

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        cmd = ["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        run = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and run.returncode != 0:
            tail = (run.stdout + run.stderr)[-3000:]
            raise StackFailed(f"`docker compose {' '.join(args)}` exited {run.returncode}:\n{tail}")
        return run.stdout

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        self.log(f"[compose-smoke] {name} ...")
        try:
            yield
        finally:
            self.timings[name] = round(time.monotonic() - start, 1)
            self.log(f"[compose-smoke] {name}: {self.timings[name]} s")

    def choose_bases(
        self, base: str, engine_env: dict[str, str], prepare: Callable[[], None] = lambda: None
    ) -> str:
        """official (pulled), debian (built here from Debian packages; `prepare` first, which
        makes sure mmdebstrap is there), or auto: official when present locally, else debian.
        Returns the choice."""
        present = all(_image_exists(i, engine_env) for i in OFFICIAL_BASES)
        choice = ("official" if present else "debian") if base == "auto" else base
        debian_present = all(_image_exists(i, engine_env) for i in DEBIAN_BASES)
        if choice == "debian" and not debian_present:
            prepare()
        if choice == "debian":
            script = ROOT / "deploy" / "base-images" / "build.sh"
            subprocess.run(["bash", str(script)], env=engine_env, timeout=1200, check=True)
            self.env["TANDEM_PYTHON_BASE"], self.env["TANDEM_REDIS_IMAGE"] = DEBIAN_BASES
        return choice

    def build(self) -> None:
        fill_build_extras(self.env)
        self.compose("--profile", "load", "build", timeout=3600)

    def up(self) -> None:
        services = (*SERVICES, "redis-node") if self.cluster else SERVICES
        self.compose(*self.profiles, "up", "-d", "--wait", "--wait-timeout", "900", *services,
                     timeout=1000)  # fmt: skip

    def health(self) -> dict[str, str]:
        """Each container's state/health; raises unless every service is running and healthy."""
        rows = [json.loads(line) for line in self.compose(*self.profiles, "ps", "-a", "--format",
                "json").splitlines() if line.strip()]  # fmt: skip
        states = {r["Name"]: f"{r['State']}/{r.get('Health') or '-'}" for r in rows}
        for r in rows:
            if r["Service"] in ("models", "redis-cluster"):  # one-shot jobs
                if r["State"] != "exited" or int(r.get("ExitCode", 1)) != 0:
                    raise StackFailed(f"{r['Service']} did not finish cleanly: {states}")
            elif r["State"] != "running" or r.get("Health") not in ("healthy", None, ""):
                raise StackFailed(f"{r['Name']} is not healthy: {states}")
        missing = set(SERVICES) - {r["Service"] for r in rows}
        if missing:
            raise StackFailed(f"services without a container: {sorted(missing)}")
        return states

    def published(self, service: str, port: int, index: int = 1) -> str:
        out = self.compose("port", "--index", str(index), service, str(port)).strip()
        return f"http://{out}"

    def load(self, results: Path) -> None:
        """locust master + workers (profile load) until the master exits; its CSVs to `results`."""
        self.compose("--profile", "load", "up", "--abort-on-container-exit", "--exit-code-from",
                     "locust-master", "locust-master", "locust-worker",
                     timeout=_seconds(self.mode.locust_run_time) + 600, check=False)  # fmt: skip
        results.mkdir(parents=True, exist_ok=True)
        for name in ("agents_stats.csv", "agents_failures.csv"):
            self.compose("cp", f"locust-master:/results/{name}", str(results / name), check=False)

    def cluster_keys(self) -> list[int]:
        """Keys on each cluster node (the cloud's state spread over the masters by hash tag)."""
        keys = []
        for index in (1, 2, 3):
            out = self.compose("--profile", "cluster", "exec", "-T", "--index", str(index),
                               "redis-node", "redis-cli", "dbsize")  # fmt: skip
            keys.append(int(out.strip()))
        state = self.compose("--profile", "cluster", "exec", "-T", "redis-node", "redis-cli",
                             "cluster", "info")  # fmt: skip
        if "cluster_state:ok" not in state:
            raise StackFailed(f"the Redis Cluster is not ok:\n{state}")
        return keys

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", timeout=120, check=False)

    def down(self) -> None:
        self.compose("--profile", "load", "--profile", "cluster", "down", "-v",
                     "--remove-orphans", timeout=300, check=False)  # fmt: skip

    def image_sizes(self) -> dict[str, float]:
        sizes = {}
        for image in IMAGES:
            out = subprocess.run(
                ["docker", "image", "inspect", "--format", "{{.Size}}", image],
                capture_output=True, text=True, env=self.env, timeout=30, check=False,
            )  # fmt: skip
            if out.returncode == 0:
                sizes[image] = round(int(out.stdout.strip()) / 2**20, 1)
        return sizes


def _image_exists(image: str, env: dict[str, str]) -> bool:
    run = subprocess.run(["docker", "image", "inspect", image], capture_output=True, env=env,
                         timeout=30, check=False)  # fmt: skip
    return run.returncode == 0


def _seconds(run_time: str) -> int:
    unit = {"s": 1, "m": 60, "h": 3600}[run_time[-1]]
    return int(float(run_time[:-1]) * unit)


def fill_build_extras(env: dict[str, str]) -> None:
    """deploy/build-extras from this host's pip settings: the CA bundle pip trusts (PIP_CERT)
    and local find-links wheels (PIP_FIND_LINKS, else /opt/wheels) — torch's CPU wheel among
    them. Both are build-stage only; absent, the images build from the index as usual."""
    cert = env.get("PIP_CERT") or env.get("SSL_CERT_FILE")
    if cert and Path(cert).is_file():
        shutil.copyfile(cert, EXTRAS / "ca.crt")
    links = [Path(p) for p in (env.get("PIP_FIND_LINKS") or "/opt/wheels").split()]
    wheels = EXTRAS / "wheels"
    for folder in (p for p in links if p.is_dir()):
        wheels.mkdir(exist_ok=True)
        for wheel in folder.glob("*.whl"):
            target = wheels / wheel.name
            if not target.exists() or target.stat().st_size != wheel.stat().st_size:
                shutil.copyfile(wheel, target)
