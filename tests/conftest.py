"""Shared fixtures: a real Redis per test session, a clean database per test, tiny artifacts."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from localrun.redis_server import RedisHandle, running_redis
from tests.credentials import ENV
from training.tiny import ArtifactDirs, write_tiny_artifacts

# Neither process has a default secret: every test runs with this session's random ones.
os.environ.update(ENV)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> ArtifactDirs:
    """Untrained but complete serving bundle and device model on a tiny world (~5 s)."""
    return write_tiny_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisHandle]:
    with running_redis() as handle:
        yield handle


@pytest.fixture()
def redis_url(redis_server: RedisHandle) -> Iterator[str]:
    """URL of the session's Redis, flushed before each test that uses it."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2.0)
    client.flushdb()
    client.close()
    yield redis_server.url
