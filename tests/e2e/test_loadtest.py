"""The load test end to end: Redis, cloud and agents as processes, locust as its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.report import level_rows, read_stats
from tests.e2e.children import alive

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BUDGET, TOLERANCE = 0.2, 0.05  # λ starts at 0 and learns within seconds: a small overshoot


@pytest.mark.timeout(240)
def test_short_loadtest_answers_every_request_within_the_budget(tmp_path: Path) -> None:
    args = [
        "--untrained", "--budget", str(BUDGET), "--users", "4", "--duration", "10s",
        "--agents", "1", "--tolerance", str(TOLERANCE), "--open-rate", "20",
        "--open-seconds", "4", "--open-devices", "8", "--grpc-users", "2",
        "--grpc-duration", "4s", "--out", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "loadtest.run", *args],
        capture_output=True, text=True, timeout=220, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (row,) = level_rows(tmp_path)
    assert row.failures == 0 and row.requests > row.app_recommends > 50
    assert row.app_recommends == row.agent_steps  # every app request answered by an agent
    assert row.cloud_rate <= BUDGET + TOLERANCE
    assert row.cloud_calls >= row.first_lists == 4  # one first list per device
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["levels"][0]["locust_exit_code"] == 0
    loop = run["open_loop"]
    assert loop["failures"] == 0 and loop["answered"] == loop["sent"] == 80
    grpc = read_stats(tmp_path / "grpc_stats.csv")
    assert grpc["Recommend"].requests > 0 and grpc["Aggregated"].failures == 0
    assert "| 0.20 | 4 |" in (tmp_path / "loadtest.md").read_text()
    assert (tmp_path / "loadtest.png").stat().st_size > 10_000
    children = json.loads((tmp_path / "children.json").read_text())
    assert {"cloud", "locust-b0.20", "openloop", "locust-grpc"} <= set(children)
    assert not [name for name, pid in children.items() if alive(pid)]
