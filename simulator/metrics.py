"""Offline metrics: AUC, GAUC, NDCG@K, Recall@K, Qini curve and AUUC."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.stats import rankdata


def _as_1d(name: str, x: object, dtype: type = np.float64) -> np.ndarray:
    arr: np.ndarray = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")


def auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve by the Mann–Whitney U statistic (ties get average ranks)."""
    y = _as_1d("labels", labels) > 0
    s = _as_1d("scores", scores)
    _same_length(labels=y, scores=s)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(
    labels: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
) -> float:
    """Group AUC: per-group AUC weighted by the group's impressions (Zhou et al., KDD 2018).

    Groups with a single class carry no ranking information and are skipped, as in the paper.
    """
    y = _as_1d("labels", labels) > 0
    s = _as_1d("scores", scores)
    g = _as_1d("groups", groups, dtype=np.int64)
    _same_length(labels=y, scores=s, groups=g)
    order = np.argsort(g, kind="stable")
    y, s, g = y[order], s[order], g[order]
    bounds = np.flatnonzero(np.diff(g)) + 1
    total, weight = 0.0, 0
    for ys, ss in zip(np.split(y, bounds), np.split(s, bounds), strict=True):
        n_pos = int(ys.sum())
        if 0 < n_pos < len(ys):
            total += auc(ys, ss) * len(ys)
            weight += len(ys)
    if weight == 0:
        raise ValueError("GAUC needs at least one group with both positive and negative labels")
    return total / weight


def dcg_at_k(relevance_in_ranked_order: Sequence[float] | np.ndarray, k: int) -> float:
    """Σ_{i<k} (2^rel_i − 1) / log2(i + 2)."""
    rel = _as_1d("relevance", relevance_in_ranked_order)[:k]
    return float(np.sum((2.0**rel - 1.0) / np.log2(np.arange(2, len(rel) + 2))))


def ndcg_at_k(relevance_in_ranked_order: Sequence[float] | np.ndarray, k: int) -> float:
    """DCG@k of the list divided by DCG@k of its ideal reordering (0 when nothing is relevant)."""
    if k <= 0:
        raise ValueError("k must be positive")
    rel = _as_1d("relevance", relevance_in_ranked_order)
    ideal = dcg_at_k(np.sort(rel)[::-1], k)
    return dcg_at_k(rel, k) / ideal if ideal > 0 else 0.0


def mean_ndcg_at_k(
    labels: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    k: int,
) -> float:
    """Mean NDCG@k over groups ranked by score; groups without a positive are skipped."""
    y = _as_1d("labels", labels)
    s = _as_1d("scores", scores)
    g = _as_1d("groups", groups, dtype=np.int64)
    _same_length(labels=y, scores=s, groups=g)
    values = []
    for group in np.unique(g):
        m = g == group
        if y[m].max() > 0:
            values.append(ndcg_at_k(y[m][np.argsort(-s[m], kind="stable")], k))
    if not values:
        raise ValueError("no group has a positive label")
    return float(np.mean(values))


def recall_at_k(ranked_item_ids: Sequence[int], relevant_item_ids: Iterable[int], k: int) -> float:
    """Share of the relevant items found in the first k of the ranking."""
    relevant = set(relevant_item_ids)
    if not relevant:
        raise ValueError("recall needs at least one relevant item")
    return len(relevant.intersection(list(ranked_item_ids)[:k])) / len(relevant)


def mean_recall_at_k(
    rankings: Sequence[Sequence[int]], relevant_sets: Sequence[Iterable[int]], k: int
) -> float:
    """Mean Recall@k over lists; lists with no relevant item are skipped."""
    values = [
        recall_at_k(r, rel, k) for r, rel in zip(rankings, relevant_sets, strict=True) if set(rel)
    ]
    if not values:
        raise ValueError("no list has a relevant item")
    return float(np.mean(values))


def qini_curve(
    uplift_scores: Sequence[float] | np.ndarray,
    treatment: Sequence[int] | np.ndarray,
    outcome: Sequence[float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve: Q(t) = Y_T(t) − Y_C(t)·N_T(t)/N_C(t) over the top-t units by score.

    Radcliffe, "Using control groups to target on predicted lift", 2007. Returns the fraction
    targeted (0..1) and Q at each fraction, starting from (0, 0).
    """
    s = _as_1d("uplift_scores", uplift_scores)
    w = _as_1d("treatment", treatment) > 0
    y = _as_1d("outcome", outcome)
    _same_length(uplift_scores=s, treatment=w, outcome=y)
    if w.all() or not w.any():
        raise ValueError("Qini needs both treated and control units")
    order = np.argsort(-s, kind="stable")
    w, y = w[order], y[order]
    n_t, n_c = np.cumsum(w), np.cumsum(~w)
    y_t, y_c = np.cumsum(y * w), np.cumsum(y * ~w)
    q = y_t - np.divide(y_c * n_t, n_c, out=np.zeros(len(y)), where=n_c > 0)
    frac = np.arange(1, len(y) + 1) / len(y)
    return np.concatenate([[0.0], frac]), np.concatenate([[0.0], q])


def auuc(
    uplift_scores: Sequence[float] | np.ndarray,
    treatment: Sequence[int] | np.ndarray,
    outcome: Sequence[float] | np.ndarray,
) -> float:
    """Area between the Qini curve and the random-targeting line, per unit (Gutierrez & Gérardy,
    "Causal inference and uplift modelling: a review of the literature", PMLR 2017)."""
    frac, q = qini_curve(uplift_scores, treatment, outcome)
    random_line = frac * q[-1]
    return float(np.trapezoid(q - random_line, frac) / len(np.asarray(uplift_scores)))


def true_uplift_auuc(
    uplift_scores: Sequence[float] | np.ndarray, true_uplift: Sequence[float] | np.ndarray
) -> float:
    """Normalised area under the cumulative true-uplift curve when units are sorted by score.

    Possible because the simulator knows each unit's true uplift: (area(score) − area(random)) /
    (area(oracle) − area(random)), so the oracle ordering scores 1 and random about 0.
    """
    s = _as_1d("uplift_scores", uplift_scores)
    u = _as_1d("true_uplift", true_uplift)
    _same_length(uplift_scores=s, true_uplift=u)

    def area(order: np.ndarray) -> float:
        return float(np.cumsum(u[order]).sum())

    random_area = u.sum() * (len(u) + 1) / 2
    oracle = area(np.argsort(-u, kind="stable")) - random_area
    if oracle <= 0:
        raise ValueError("true uplift is constant: the ordering carries no information")
    return (area(np.argsort(-s, kind="stable")) - random_area) / oracle
