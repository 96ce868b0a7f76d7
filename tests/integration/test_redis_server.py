"""The project starts a real Redis (Streams, Lua) and stops it by pid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from localrun.processes import stop_process
from localrun.redis_server import running_redis, start_redis_server

pytestmark = pytest.mark.integration


def test_session_redis_supports_streams_and_lua(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    entry = client.xadd("t:stream", {"a": "1"})
    client.xgroup_create("t:stream", "g", id="0")
    got = client.xreadgroup("g", "c", {"t:stream": ">"}, count=1)
    assert got[0][1][0][0] == entry
    assert client.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "t:n", 5) == 5


def test_started_server_is_stopped_by_pid(tmp_path: Path) -> None:
    proc, url, _source = start_redis_server(tmp_path)
    assert redis.Redis.from_url(url, socket_timeout=2.0).ping()
    stop_process(proc)
    assert proc.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def test_running_redis_prefers_redis_url(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    with running_redis() as handle:
        assert handle.url == redis_url
        assert handle.pid is None
