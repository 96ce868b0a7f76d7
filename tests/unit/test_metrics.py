"""Metrics against hand-computed values and against scikit-learn where it is installed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from simulator.metrics import (
    auc,
    auuc,
    gauc,
    mean_ndcg_at_k,
    mean_recall_at_k,
    ndcg_at_k,
    qini_curve,
    recall_at_k,
    true_uplift_auuc,
)

pytestmark = pytest.mark.unit


def test_auc_by_hand_with_a_tie() -> None:
    # positives score 0.9 and 0.5; negatives 0.1 and 0.5. Pairs (pos, neg):
    # (0.9, 0.1) win, (0.9, 0.5) win, (0.5, 0.1) win, (0.5, 0.5) tie = 1/2  → 3.5 / 4
    assert auc([1, 0, 1, 0], [0.9, 0.1, 0.5, 0.5]) == pytest.approx(0.875)


def test_auc_rejects_one_class_and_nan() -> None:
    with pytest.raises(ValueError, match="both positive and negative"):
        auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auc([1, 0], [np.nan, 0.3])
    with pytest.raises(ValueError, match="length mismatch"):
        auc([1, 0, 1], [0.1, 0.2])


def test_gauc_weights_groups_by_impressions_and_skips_one_class_groups() -> None:
    labels = [1, 0, 0, 1, 0, 1, 1]
    scores = [0.9, 0.1, 0.8, 0.2, 0.3, 0.5, 0.6]
    groups = [0, 0, 1, 1, 1, 2, 2]
    # group 0: AUC 1 (2 impressions); group 1: positive 0.2 below 0.8, above... vs 0.3 → 0 (3)
    # group 2 has only positives → skipped.  GAUC = (1·2 + 0·3) / 5
    assert gauc(labels, scores, groups) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at least one group"):
        gauc([1, 1], [0.1, 0.2], [0, 0])


def test_ndcg_by_hand() -> None:
    # ranked relevance [0, 1, 1]: DCG@2 = 1/log2(3); ideal [1, 1]: 1 + 1/log2(3)
    expected = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert ndcg_at_k([0, 1, 1], 2) == pytest.approx(expected)
    assert ndcg_at_k([0, 0], 5) == 0.0
    assert mean_ndcg_at_k([1, 0, 0, 1], [0.9, 0.1, 0.9, 0.1], [0, 0, 1, 1], 1) == 0.5


def test_recall_by_hand() -> None:
    assert recall_at_k([5, 3, 9, 1], {3, 1}, 2) == 0.5
    assert mean_recall_at_k([[1, 2], [3, 4]], [{2}, set()], 1) == 0.0
    with pytest.raises(ValueError):
        recall_at_k([1], set(), 1)


def test_qini_curve_by_hand() -> None:
    scores = [0.9, 0.8, 0.7, 0.6]
    treatment = [1, 0, 1, 0]
    outcome = [1, 0, 0, 1]
    frac, q = qini_curve(scores, treatment, outcome)
    # t=1: Y_T=1; t=2: 1 − 0·1/1 = 1; t=3: 1 − 0·2/1 = 1; t=4: 1 − 1·2/2 = 0
    np.testing.assert_allclose(q, [0, 1, 1, 1, 0])
    np.testing.assert_allclose(frac, [0, 0.25, 0.5, 0.75, 1])
    assert auuc(scores, treatment, outcome) > 0
    with pytest.raises(ValueError, match="treated and control"):
        qini_curve(scores, [1, 1, 1, 1], outcome)


def test_true_uplift_auuc_oracle_is_one_and_random_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    uplift = rng.normal(size=2000)
    assert true_uplift_auuc(uplift, uplift) == pytest.approx(1.0)
    assert true_uplift_auuc(-uplift, uplift) == pytest.approx(-1.0)
    randoms = [true_uplift_auuc(rng.normal(size=2000), uplift) for _ in range(20)]
    assert abs(float(np.mean(randoms))) < 0.05


def test_agrees_with_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) + labels * 0.5
    scores[::7] = scores[0]  # ties
    assert auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    rel = rng.integers(0, 2, 30)  # binary: sklearn's linear gain equals 2^rel - 1
    s = rng.normal(size=30)
    ours = ndcg_at_k(rel[np.argsort(-s, kind="stable")], 10)
    assert ours == pytest.approx(metrics.ndcg_score([rel], [s], k=10))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(-1e3, 1e3)), min_size=2, max_size=60))
def test_auc_is_invariant_to_monotone_transforms_and_flips(rows: list[tuple[bool, float]]) -> None:
    labels = np.array([r[0] for r in rows])
    scores = np.array([r[1] for r in rows])
    if labels.all() or not labels.any():
        return
    base = auc(labels, scores)
    assert auc(labels, np.exp(rankdata(scores) / len(scores))) == pytest.approx(base)
    assert auc(labels, -scores) == pytest.approx(1 - base)
