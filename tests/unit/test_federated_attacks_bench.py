"""The attack benchmark's pure parts: the backdoor push, the contribution report, the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tandem_core.federated.update import ModelUpdate, UpdateLimits, check
from training.federated.attacks import BACKDOOR_NORM, table, with_backdoor
from training.federated.contribution_eval import Scored, report

pytestmark = pytest.mark.unit
DIM = 4  # 2 embedding + 2 bias columns


def honest(ids: list[int]) -> ModelUpdate:
    return ModelUpdate(
        "d", np.array(ids, np.int64), np.full((len(ids), DIM), 0.01, np.float32),
        np.ones(len(ids), np.int64), {"w": np.full(2, 0.1, np.float32)}, 7, update_id="u",
    )  # fmt: skip


@pytest.mark.parametrize("ids", [[1, 5], [1, 3, 5]])  # the target pulled or not
def test_the_backdoor_push_raises_the_target_bias_within_every_bound(ids: list[int]) -> None:
    u = with_backdoor(honest(ids), target=3, d_emb=2)
    assert u.item_ids.tolist() == sorted({*ids, 3})
    k = u.item_ids.tolist().index(3)
    np.testing.assert_array_equal(u.row_deltas[k], [0, 0, BACKDOOR_NORM, 0])
    assert u.row_counts[k] == u.num_samples  # claims every sample for the row
    others = [i for i in range(len(u.item_ids)) if i != k]
    np.testing.assert_array_equal(u.row_deltas[others], np.float32(0.01))
    check(u, UpdateLimits(10, DIM, {"w": (2,)}, 10, max_row_norm=10.0, max_update_norm=100.0))


def test_the_contribution_report_ranks_hostile_pushes_within_their_round() -> None:
    # round 0: 10 pushes, the hostile one lowest; round 1: 10 pushes, the hostile one 3rd lowest
    scored = [Scored(0, float(k), float(k), k == 0) for k in range(10)]
    scored += [Scored(1, float(k), -float(k), k == 2) for k in range(10)]
    got = report(scored)
    assert got["bottom_decile_first_order"] == 0.5  # the decile of 10 is the lowest one
    assert got["median_pct_first_order"] == pytest.approx((0 + 2 / 9) / 2)
    assert got["bottom_decile_fisher"] == 0.5  # round 1 reversed: the hostile one is 8th lowest
    assert got["median_pct_fisher"] == pytest.approx((0 + 7 / 9) / 2)
    # AUC of a low score flagging hostile pushes: pooled over rounds
    assert 0.5 < got["contrib_auc_first_order"] < 1.0
    clean = report([Scored(0, 1.0, 1.0, False), Scored(0, 2.0, 2.0, False)])
    assert all(math.isnan(v) for v in clean.values())  # no hostile push: undefined


def test_the_table_compares_with_the_clean_undefended_run() -> None:
    def r(attack: str, kind: str, profile: str, auc: float) -> dict[str, object]:
        return {"attack": attack, "kind": kind, "profile": profile, "auc": auc, "round": 3,
                "refused_honest": 0, "refused_hostile": 1, "abandoned": 0,
                "target_rank": 10.0, "contrib_auc_fisher": 0.9}  # fmt: skip

    lines = table([r("clean", "clean", "none", 0.68), r("scaled 10 %", "scaled", "robust", 0.67)])
    assert lines[-1].startswith("| scaled 10 % | robust | 0.6700 | 0.6700 | -1.00 | 3 | 0 / 1 |")
    assert lines[-1].endswith("| – / 0.900 | – / – | – / – |")  # a mode not run: –
