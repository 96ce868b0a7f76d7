"""Retrieval merges its sources without duplicates and never returns excluded items."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cloud_service.recommender.retrieval import RetrievalConfig, Retriever

pytestmark = pytest.mark.unit


def _retriever(n: int = 300) -> Retriever:
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(3, 8))
    category = np.arange(n) % 3
    emb = centroids[category] + 0.1 * rng.normal(size=(n, 8))
    co = sp.csr_matrix((np.ones(2), ([0, 3], [3, 0])), shape=(n, n))
    cfg = RetrievalConfig(n_embedding=40, n_cooccurrence=5, n_popular=10)
    return Retriever(emb.astype(np.float32), co, np.arange(n, dtype=float)[::-1], cfg)


def test_candidates_are_unique_and_exclude_given_ids() -> None:
    r = _retriever()
    exclude = np.arange(0, 60, 2)
    out = r.retrieve(np.array([6, 9]), exclude)
    assert len(out) == len(set(out.tolist()))
    assert not set(out.tolist()) & set(exclude.tolist())
    assert 6 not in out and 9 not in out  # the behaviour itself is not recommended back


def test_embedding_neighbours_come_from_the_clicked_category() -> None:
    r = _retriever()
    out = r.retrieve(np.array([4]), np.array([], dtype=np.int64))
    neighbours = out[:40]
    assert np.mean(neighbours % 3 == 4 % 3) > 0.9


def test_cold_start_falls_back_to_popular_and_cooccurrence_is_used() -> None:
    r = _retriever()
    cold = r.retrieve(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert cold.tolist() == list(range(10))  # the 10 most popular
    warm = r.retrieve(np.array([0]), np.array([], dtype=np.int64))
    assert 3 in warm.tolist()
