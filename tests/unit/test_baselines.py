"""Popularity and item-CF score what they claim to, on a log small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.baselines import ItemCF, Popularity
from simulator.dataset import PAD
from simulator.logs import Impressions

pytestmark = pytest.mark.unit


def _log(rows: list[tuple[int, int, int]]) -> Impressions:
    """rows of (session, item, click)."""
    a = np.asarray(rows, dtype=np.int64)
    n = len(a)
    zeros = np.zeros(n, dtype=np.int64)
    return Impressions(
        session=a[:, 0], user=a[:, 0], step=zeros, position=zeros, item=a[:, 1],
        category=zeros, click=a[:, 2].astype(bool), purchase=np.zeros(n, dtype=bool),
        timestamp=np.arange(n, dtype=np.int64), intent=zeros,
    )  # fmt: skip


LOG = _log([(0, 1, 1), (0, 2, 1), (1, 1, 1), (1, 2, 1), (2, 1, 1), (2, 3, 1), (3, 4, 0)])


def test_popularity_orders_by_training_clicks() -> None:
    scorer = Popularity(LOG, n_items=5)
    s = scorer.score(np.zeros(1), np.full((1, 2), PAD), np.array([[1, 2, 3, 4, PAD]]))[0]
    assert s[0] > s[1] > s[2] > s[3]
    assert s[4] == -np.inf


def test_item_cf_prefers_co_clicked_items() -> None:
    scorer = ItemCF(LOG, n_items=5)
    # cosine: sim(1,2) = 2 / sqrt(3 * 2), sim(1,3) = 1 / sqrt(3 * 1)
    assert scorer.similarity[1, 2] == pytest.approx(2 / np.sqrt(6))
    assert scorer.similarity[1, 3] == pytest.approx(1 / np.sqrt(3))
    history = np.array([[PAD, 2]])
    s = scorer.score(np.zeros(1), history, np.array([[1, 3, 4]]))[0]
    assert s[0] > s[1] and s[0] > s[2]
    empty = scorer.score(np.zeros(1), np.full((1, 2), PAD), np.array([[1, 4]]))[0]
    assert empty[0] > empty[1]  # no history: popularity tie-break only
