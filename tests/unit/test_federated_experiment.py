"""The federated experiment's buckets and seed summary (pure parts; the run itself is measured)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from training.federated.experiment import Buckets, chosen, seed_table


def fake_experiment(items: list[int], clicks: list[int], n_items: int) -> Any:
    train = SimpleNamespace(item=np.array(items), click=np.array(clicks, dtype=np.float32))
    return SimpleNamespace(
        held_out=SimpleNamespace(split=SimpleNamespace(train=train)),
        world=SimpleNamespace(cfg=SimpleNamespace(n_items=n_items)),
    )


def test_cold_is_the_least_clicked_fifth_and_tail_the_first_fifth_of_impressions() -> None:
    # 10 items; item i is shown i + 1 times and clicked on its last showing when i >= 5
    items, clicks = [], []
    for i in range(10):
        items += [i] * (i + 1)
        clicks += [0] * i + [int(i >= 5)]
    b = Buckets.of(fake_experiment(items, clicks, 10))
    assert b.cold.tolist() == [0, 1]  # the two least clicked (ties by id)
    # zero-click items 0..4 carry 1+2+3+4+5 = 15 of 55 impressions; 20 % = 11 is reached at
    # item 4 (cumulative 15), so the tail is items 0..4
    assert b.tail.tolist() == [0, 1, 2, 3, 4]


def test_the_round_is_chosen_on_validation_and_a_diverged_run_reports_its_last_point() -> None:
    curve = [
        {"round": 1, "auc": 0.9, "valid_auc": 0.5},  # best on test, not chosen
        {"round": 2, "auc": 0.6, "valid_auc": 0.7},
        {"round": 3, "auc": math.nan, "valid_auc": math.nan},
    ]
    assert chosen(curve)["round"] == 2
    assert chosen(curve[2:])["round"] == 3


def test_seed_table_reports_the_mean_gap_to_central() -> None:
    def point(a: float) -> dict[str, float]:
        return {"auc": a, "cold_auc": a, "tail_auc": a}

    rows = [
        {"seed": 0, "central": point(0.70), "FedSubAvg": point(0.70), "FedAvg": point(0.68)},
        {"seed": 1, "central": point(0.70), "FedSubAvg": point(0.68), "FedAvg": point(0.66)},
    ]
    lines = seed_table(rows)
    assert lines[-1] == "Mean gap to central AUC: FedSubAvg 1.43 %, FedAvg 4.29 %."
    assert "| mean | 0.7000 / 0.7000 / 0.7000 | 0.6900 / 0.6900 / 0.6900 |" in "\n".join(lines)
