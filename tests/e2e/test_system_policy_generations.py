"""Policy generations over the processes: logs consumed, a gate decided, a release hot-swapped."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def logged(directory: Path) -> list[tuple[float, float]]:
    """(logged value, shift feature) of every page's decision of the policy (step > 1)."""
    pairs = []
    for path in sorted(directory.glob("decisions-*.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if int(row["step"]) > 1 and row["features"]:
                    pairs.append((float(row["value"]), float(row["features"].split()[0])))
    return pairs


@pytest.mark.timeout(240)
def test_two_generations_gate_release_and_swap_the_value_model(tmp_path: Path) -> None:
    # a tolerance no DR-AUUC gap can exceed: the first fitted candidate is promoted, so the
    # release → cloud → agents path is exercised whatever the tiny logs say
    out = subprocess.run(
        [sys.executable, "-m", "localrun.policy_generations", "--untrained", "--scale", "tiny",
         "--out", str(tmp_path), "--generations", "2", "--sessions", "80", "--users", "4",
         "--min-arm", "5", "--tolerance", "100", "--fit-epochs", "5"],
        capture_output=True, text=True, timeout=220, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"cloud": 0' in out.stdout  # every child stopped cleanly on SIGTERM
    work = tmp_path / "generations"
    gens = json.loads((work / "generations.json").read_text())["generations"]
    first, second = gens
    assert first["deciding_with"] == "shift score"
    for g in gens:
        assert g["sessions"] == 80 and g["steps"] > 80 and g["rows"] > 0
        assert g["train_rows"] > 0 and g["held_out_rows"] > 0
        assert g["candidate_auuc"] is not None and g["serving_auuc"] is not None
        assert abs(g["request_rate"] - g["logged_rate"]) < 0.02  # /status and logs agree
    assert first["promoted"] and first["released"].startswith("value-")
    # generation 1 started only once every agent reported generation 0's release
    assert second["deciding_with"] == first["released"]
    assert (work / "registry" / "value_model" / "versions" / first["released"]).is_dir()
    # the logs show what the agents decided on: the shift score itself, then the model's value
    before, after = logged(work / "logs" / "gen-0"), logged(work / "logs" / "gen-1")
    assert before and all(abs(v - s) < 1e-4 for v, s in before)
    assert after and any(abs(v - s) > 1e-3 for v, s in after)
