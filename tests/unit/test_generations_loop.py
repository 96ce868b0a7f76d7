"""The generations loop's pure parts: learner rows, the device split, log figures, the gate."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from localrun.policy_generations import Gate, held_out, learner_rows, log_figures
from training.event_logs import DECISION_COLUMNS
from training.policy.fleet_logs import DecisionRows

pytestmark = pytest.mark.unit


def rows(w: list[bool], p: list[float], failed: list[bool] | None = None) -> DecisionRows:
    n = len(w)
    wa, pa = np.array(w), np.array(p)
    return DecisionRows(
        x=np.arange(n, dtype=np.float32).reshape(n, 1), w=wa, p=pa, forced=wa & (pa >= 1.0),
        failed=np.array(failed or [False] * n),
        y=np.ones(n), dwell=np.ones(n, dtype=np.int64), censored=np.zeros(n, dtype=bool),
        device=np.array([f"d{i}" for i in range(n)]), step=np.arange(n) + 2, horizon=1,
        dropped=0,
    )  # fmt: skip


def test_learner_rows_drop_forced_and_choiceless_rows_and_give_p_ask() -> None:
    # asked p .95 | kept p .95 (P(ask) .05) | forced ask | no token (kept, p 1) | asked p .05
    got = learner_rows(rows([True, False, True, False, True], [0.95, 0.95, 1.0, 1.0, 0.05]))
    assert got.device.tolist() == ["d0", "d1", "d4"]
    np.testing.assert_allclose(got.p_ask, [0.95, 0.05, 0.05])
    assert got.arms() == (2, 1)


def test_learner_rows_drop_failed_asks_and_hostile_propensities() -> None:
    # a failed ask | P(ask) 1e-30 (kept, p ≈ 1) | P(ask) 1 − 1e-30 (kept, p 1e-30) | a good row
    got = learner_rows(rows([True, True, False, True], [0.5, 1e-30, 1e-30, 0.5],
                            failed=[True, False, False, False]))  # fmt: skip
    assert got.device.tolist() == ["d3"]


def test_held_out_is_a_stable_roughly_even_split() -> None:
    devices = np.array([f"gen0-{i}" for i in range(2000)])
    mask = held_out(devices)
    assert np.array_equal(mask, held_out(devices.copy()))
    assert 0.45 < mask.mean() < 0.55


def test_gate_passes_within_tolerance_and_never_without_scores() -> None:
    assert Gate(1, 1, 0.30, 0.31).passes(0.02)
    assert not Gate(1, 1, 0.28, 0.31).passes(0.02)
    assert not Gate(1, 1, note="too few rows").passes(100.0)


def test_log_figures_count_pages_requests_and_reward_once(tmp_path: Path) -> None:
    path = tmp_path / "decisions-000001.csv"
    entries = [  # (entry id, device, action, step, asked)
        ("1-0", "a", "exposure", 1, 1), ("1-1", "a", "click", 1, 1),  # initial: not a request
        ("2-0", "a", "purchase", 2, 1), ("2-0", "a", "purchase", 2, 1),  # re-written row
        ("3-0", "a", "exposure", 3, 0), ("4-0", "b", "click", 2, 0),
    ]  # fmt: skip
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, DECISION_COLUMNS, restval="0")
        out.writeheader()
        for eid, device, action, step, asked in entries:
            out.writerow({"entry_id": eid, "device": device, "action": action, "step": step,
                          "asked_cloud": asked, "features": ""})  # fmt: skip
    got = log_figures([path])
    assert (got.pages, got.requests, got.reward) == (4, 1, 1 + (1 + 3) + 1)  # a purchase: 1 + 3
