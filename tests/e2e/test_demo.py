"""The README's main command: the whole topology as processes on a real Redis, then its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.children import alive

pytestmark = pytest.mark.e2e


def run_demo(args: list[str], timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localrun.demo", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_demo_topology_answers_every_app_request_within_budget(tmp_path: Path) -> None:
    out = run_demo(
        ["--untrained", "--sessions", "40", "--users", "4", "--budget", "0.2", "--out",
         str(tmp_path)], timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["policy"]: r for r in report["rows"]}
    assert set(rows) == {"ours (value-paced)", "AlwaysQ", "NoQ"}
    for row in rows.values():
        assert row["failed"] == 0 and row["app_requests"] > 40  # every app request answered
        assert row["served_by_cloud"] + row["served_locally"] == row["app_requests"]
    # pacing: λ learns from the first steps, so allow a small overshoot of the 20 % budget
    assert report["realised_rate"] <= 0.2 + 0.05
    assert rows["NoQ"]["paced_cloud_requests"] < rows["ours (value-paced)"]["paced_cloud_requests"]
    children = json.loads((tmp_path / "children.json").read_text())
    assert len(children) == 6 and not any(alive(pid) for pid in children.values())
    assert '"cloud": 0' in out.stdout and '"aggregator": 0' in out.stdout  # clean on SIGTERM
    federated = report["federated"]  # our devices checked in with the parameter server
    assert sum(federated["device_outcomes"].values()) > 0
    # the model loop: every publication was gated (its report on disk says the same), and the
    # cloud served only the start version and promoted ones, the last promoted one last
    gates = Path(federated["registry"]) / "gates"
    promoted = []
    for pub in federated["publications"]:
        assert "error" not in pub, pub
        saved = json.loads((gates / f"{pub['candidate']}.json").read_text())
        assert saved["promoted"] == pub["promoted"]
        assert f"+fl{pub['federated_version']}." in pub["candidate"]
        promoted += [pub["candidate"]] if pub["promoted"] else []
    served = [w["version"] for w in federated["served"]]
    assert served and set(served[1:]) <= set(promoted)
    assert served[-1] == (promoted[-1] if promoted else served[0])
    assert (tmp_path / "demo_report.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_trains_on_the_small_world_and_prints_every_table(tmp_path: Path) -> None:
    out = run_demo(
        ["--scale", "small", "--sessions", "60", "--users", "4", "--out", str(tmp_path)],
        timeout=1100,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "| intent switches / step |" in text
    rows = [
        line for line in text.splitlines()
        if line.startswith(("| popularity", "| item-cf", "| din (ours)"))
    ]  # fmt: skip
    assert len(rows) == 3
    for row in rows:
        cells = [float(c) for c in row.strip("|").split("|")[1:]]
        assert all(0.0 <= c <= 1.0 for c in cells)
    assert "## Fleet report" in text and "failed app requests: 0" in text
    assert (tmp_path / "ranker" / "serving" / "ranker.onnx").exists()
