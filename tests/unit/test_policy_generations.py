"""Policy generations: logs with exploration → a gated, signed value model → the next fleet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from tandem_core.release import VALUE_MODEL, current_version, history
from training.policy.generations import run

pytestmark = pytest.mark.unit


def test_generations_log_gate_release_and_switch_rule(tmp_path: Path) -> None:
    with threadpool_limits(1):
        report = run("default", 2, 120, tmp_path, budget=0.10, tolerance=10.0)  # always promote
    assert report[0].serving == "shift score"
    assert all(0.0 < g.rate < 0.3 and 0.0 < g.explored <= 1.0 for g in report)
    kind_dir = tmp_path / "registry" / VALUE_MODEL
    assert all(g.promoted for g in report) and len(history(kind_dir)) == 2
    assert report[1].serving == history(kind_dir)[0]  # generation 1 decided with gen 0's model
    assert current_version(kind_dir) == history(kind_dir)[1]
    saved = json.loads((tmp_path / "generations.json").read_text())
    assert [g["index"] for g in saved] == [0, 1]


def test_a_candidate_below_the_serving_rule_is_not_released(tmp_path: Path) -> None:
    with threadpool_limits(1):
        report = run("default", 1, 60, tmp_path, budget=0.10, tolerance=-10.0)  # never promote
    assert not report[0].promoted
    assert current_version(tmp_path / "registry" / VALUE_MODEL) is None
