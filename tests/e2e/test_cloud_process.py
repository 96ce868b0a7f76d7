"""The cloud service as its own process: starts from CLOUD_* settings, answers, exits on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cloud_service.auth import device_token
from training.tiny import ArtifactDirs

pytestmark = pytest.mark.e2e


def test_cloud_process_serves_and_shuts_down_cleanly_on_sigterm(
    tiny_artifacts: ArtifactDirs, redis_url: str, tmp_path: Path
) -> None:
    ports_file = tmp_path / "ports.json"
    env = {
        **os.environ, "CLOUD_REDIS_URL": redis_url, "CLOUD_GRPC_PORT": "0", "CLOUD_HTTP_PORT": "0",
        "CLOUD_BUNDLE_DIR": str(tiny_artifacts.bundle),
        "CLOUD_DEVICE_MODEL_DIR": str(tiny_artifacts.device),
        "CLOUD_RELEASE_PUBLIC_KEY_FILE": str(tiny_artifacts.public_key),
        "CLOUD_PORTS_FILE": str(ports_file), "CLOUD_AUTH_SECRET": "e2e-secret-0123456789",
        "CLOUD_SHUTDOWN_GRACE_S": "1",
    }  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "cloud_service.main"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ports_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "cloud did not start"
            time.sleep(0.1)
        http = f"http://127.0.0.1:{json.loads(ports_file.read_text())['http']}"
        token = device_token(b"e2e-secret-0123456789", "p1")
        reply = httpx.post(
            f"{http}/v1/recommend", json={"device_id": "p1", "k": 3},
            headers={"x-device-token": token}, timeout=10,
        )  # fmt: skip
        assert reply.status_code == 200 and len(reply.json()["items"]) == 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(
    "command",
    [
        ["cloud_service.main"],
        ["cloud_service.federated.aggregator"],
        ["training.federated.publish", "--out", "unused"],
    ],
)
def test_invalid_settings_fail_fast_with_a_clear_message(command: list[str]) -> None:
    """Every CLOUD_* process names each bad variable and exits 2, before touching Redis."""
    env = {
        **os.environ, "CLOUD_BUDGET_RATE": "-5", "CLOUD_GRPC_PORT": "not-a-port",
        "CLOUD_FL_ROUND_S": "-1",
    }  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("invalid CLOUD_* settings:")
    for variable in (
        "CLOUD_BUDGET_RATE='-5'",
        "CLOUD_GRPC_PORT='not-a-port'",
        "CLOUD_FL_ROUND_S='-1'",
    ):
        assert variable in out.stderr
    assert "Traceback" not in out.stderr
