"""Decisions logs -> per-decision rows: reward over the horizon, dwell, forced, dedup, order."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from training.event_logs import DECISION_COLUMNS
from training.policy.fleet_logs import decision_rows

pytestmark = pytest.mark.unit

# (entry id, device, action, step, asked, propensity, features) — device "a" has pages 1..5:
#   step 1: asked, p 1 (the initial list: forced)  reward 1 (a click)
#   step 2: local                                  reward 4 (a purchase: 1 + 3)
#   step 3: asked, p 0.5 (the policy's, randomised) reward 2 (two clicks)
#   step 4: local, p 0.8                           reward 0
#   step 5: local                                  reward 1
# device "b": step 1 asked (forced), step 2 from an agent that logs no features.
EVENTS = [
    ("1000-0", "a", "exposure", 1, 1, 1.0, "0.5 1"),
    ("1000-1", "a", "exposure", 1, 1, 1.0, "0.5 1"),
    ("1001-0", "a", "click", 1, 1, 1.0, "0.5 1"),
    ("1001-1", "a", "click", 0, 0, 1.0, ""),  # not on a page: no decision, no reward
    ("2000-0", "a", "exposure", 2, 0, 1.0, "0.25 2"),
    ("2001-0", "a", "purchase", 2, 0, 1.0, "0.25 2"),
    ("3000-0", "a", "exposure", 3, 1, 0.5, "1 3"),
    ("3001-0", "a", "click", 3, 1, 0.5, "1 3"),
    ("3002-0", "a", "click", 3, 1, 0.5, "1 3"),
    ("4000-0", "a", "exposure", 4, 0, 0.8, "0 4"),
    ("5000-0", "a", "exposure", 5, 0, 1.0, "0 5"),
    ("5001-0", "a", "click", 5, 0, 1.0, "0 5"),
    ("1500-0", "b", "exposure", 1, 1, 1.0, "9 9"),
    ("1501-0", "b", "click", 1, 1, 1.0, "9 9"),
    ("2500-0", "b", "exposure", 2, 0, 1.0, ""),
    ("2501-0", "b", "purchase", 2, 0, 1.0, ""),
]


def write(path: Path, events: list[tuple]) -> Path:
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=DECISION_COLUMNS)
        out.writeheader()
        for eid, device, action, step, asked, p, features, *rest in events:
            item = rest[0] if rest else None  # default: one item per event (one impression)
            source = rest[1] if len(rest) > 1 else ("cloud" if asked else "local")
            out.writerow({
                "entry_id": eid, "device": device, "user_id": 0,
                "item_id": item if item is not None else int(eid.replace("-", "")),
                "category_id": 0, "action": action, "timestamp_ms": int(eid.split("-")[0]),
                "position": 0, "request_id": "", "source": source,
                "asked_cloud": asked, "value": 0.5, "threshold": 0.25, "propensity": p,
                "batch_id": "b", "step": step, "features": features,
            })  # fmt: skip
    return path


def test_rows_have_the_reward_dwell_and_forced_flag_of_each_decision(tmp_path: Path) -> None:
    # out of order across two files, and the consumer wrote two rows twice (a crash)
    first = write(tmp_path / "decisions-000001.csv", EVENTS[8:][::-1])
    second = write(tmp_path / "decisions-000002.csv", [*EVENTS[:8], EVENTS[5], EVENTS[14]])
    rows = decision_rows([second, first], horizon=2)

    assert list(zip(rows.device.tolist(), rows.step.tolist(), strict=True)) == [
        ("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1),
    ]  # fmt: skip
    assert rows.dropped == 1  # a's step 5: its horizon (5, 6) runs past the log
    np.testing.assert_array_equal(rows.x, [[0.5, 1], [0.25, 2], [1, 3], [0, 4], [9, 9]])
    assert rows.x.dtype == np.float32
    np.testing.assert_array_equal(rows.y, [1 + 4, 4 + 2, 2 + 0, 0 + 1, 1 + 4])
    np.testing.assert_array_equal(rows.w, [True, False, True, False, True])
    np.testing.assert_array_equal(rows.p, [1.0, 1.0, 0.5, 0.8, 1.0])
    np.testing.assert_array_equal(rows.forced, [True, False, False, False, True])
    np.testing.assert_array_equal(rows.dwell, [2, 1, 3, 2, 2])
    np.testing.assert_array_equal(rows.censored, [False, False, True, True, True])
    assert len(rows) == 5 and rows.horizon == 2


def test_the_default_horizon_drops_the_last_two_pages(tmp_path: Path) -> None:
    rows = decision_rows([write(tmp_path / "decisions-000001.csv", EVENTS)])
    assert rows.step[rows.device == "a"].tolist() == [1, 2, 3]
    assert rows.y[rows.device == "a"].tolist() == [1 + 4 + 2, 4 + 2 + 0, 2 + 0 + 1]
    assert "b" not in rows.device.tolist() and rows.dropped == 3


def test_logs_without_steps_give_no_rows(tmp_path: Path) -> None:
    rows = decision_rows([write(tmp_path / "d.csv", [EVENTS[3]])])
    assert len(rows) == 0 and rows.x.shape == (0, 0) and rows.dropped == 0


def test_a_minority_feature_width_is_dropped_not_fatal(tmp_path: Path) -> None:
    """One device logging another width (an old agent, a hostile one) cannot stop training."""
    mixed = [
        ("1-0", "a", "exposure", 1, 1, 1.0, "1 2"), ("2-0", "a", "exposure", 2, 0, 1, "1 3"),
        ("3-0", "b", "exposure", 1, 0, 0.5, "9"), ("4-0", "a", "exposure", 3, 0, 1, ""),
    ]  # fmt: skip
    path = write(tmp_path / "d.csv", mixed)
    rows = decision_rows([path], horizon=1)
    assert rows.x.tolist() == [[1, 2], [1, 3]] and rows.dropped == 1


def test_repeated_events_count_once_and_failed_asks_are_flagged(tmp_path: Path) -> None:
    """An item's reward is its furthest action, once; an ask the cloud did not answer (the page
    came from the pool) is flagged, not taken for a refresh."""
    events = [
        ("1-0", "a", "exposure", 1, 1, 0.5, "1", 7, "local"),
        *[(f"2-{i}", "a", "purchase", 1, 1, 0.5, "1", 7, "local") for i in range(50)],
        ("3-0", "a", "click", 1, 1, 0.5, "1", 8, "local"),
        ("4-0", "a", "exposure", 2, 1, 0.5, "2", 9, "cloud"),
    ]  # fmt: skip
    rows = decision_rows([write(tmp_path / "d.csv", events)], horizon=1)
    assert rows.y.tolist() == [4.0 + 1.0, 0.0]  # 50 purchases of item 7 count once
    assert rows.failed.tolist() == [True, False]

    with pytest.raises(ValueError, match="horizon"):
        decision_rows([write(tmp_path / "e.csv", EVENTS)], horizon=0)
