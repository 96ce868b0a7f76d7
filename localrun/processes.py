"""Starts the cloud service and device agents as child processes and waits for their ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within timeout_s; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return int(proc.returncode)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]

    def stop(self, timeout_s: float = 15.0) -> int:
        return stop_process(self.proc, timeout_s)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=15)


def wait_ports(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} not ready after {timeout_s} s")
        time.sleep(0.05)
    return {k: int(v) for k, v in json.loads(path.read_text()).items()}


def start_child(
    name: str, module: str, env: dict[str, str], workdir: Path, log: Path | None = None
) -> Child:
    """Run `python -m module` with env; its *_PORTS_FILE tells us when it is ready."""
    prefix = "CLOUD" if module.startswith("cloud_service") else "DEVICE"
    ports_file = workdir / f"{name}.ports.json"
    ports_file.unlink(missing_ok=True)
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, **env, f"{prefix}_PORTS_FILE": str(ports_file)},
        stdout=out, stderr=out,
    )  # fmt: skip
    try:
        return Child(name, proc, wait_ports(ports_file, proc))
    except Exception:
        proc.kill()
        raise
