"""Reference recommenders every model is compared with: popularity and item-based CF."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp

from simulator.dataset import PAD
from simulator.logs import Impressions


class Scorer(Protocol):
    """Scores candidate items for users given their click histories."""

    name: str

    def score(self, users: np.ndarray, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        """users (B,), history (B, L) padded with PAD, items (B, C) padded with PAD → (B, C)."""
        ...


def click_counts(train: Impressions, n_items: int) -> np.ndarray:
    return np.bincount(train.item[train.click.astype(bool)], minlength=n_items).astype(np.float64)


class Popularity:
    """Most-clicked items first (training period only)."""

    name = "popularity"

    def __init__(self, train: Impressions, n_items: int) -> None:
        self.log_count = np.log1p(click_counts(train, n_items))

    def score(self, users: np.ndarray, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.where(items == PAD, -np.inf, self.log_count[np.maximum(items, 0)])


class ItemCF:
    """Item-based CF on session co-clicks with cosine similarity (Sarwar et al., WWW 2001)."""

    name = "item-cf"

    def __init__(self, train: Impressions, n_items: int) -> None:
        clicked = train.click.astype(bool)
        sessions, items = train.session[clicked], train.item[clicked]
        _, sess_idx = np.unique(sessions, return_inverse=True)
        incidence = sp.csr_matrix(
            (np.ones(len(items)), (sess_idx, items)), shape=(int(sess_idx.max()) + 1, n_items)
        )
        incidence.data[:] = 1.0  # duplicates collapse to one co-occurrence per session
        co = (incidence.T @ incidence).tocsr()
        norm = np.sqrt(np.maximum(co.diagonal(), 1.0))
        co.setdiag(0.0)
        co.eliminate_zeros()
        inv = sp.diags(1.0 / norm)
        self.similarity = (inv @ co @ inv).tocsr()
        # ties (no co-click evidence) are broken by popularity, scaled to stay below any link
        self.tiebreak = 1e-3 * np.log1p(click_counts(train, n_items))

    def score(self, users: np.ndarray, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        b, c = items.shape
        out = np.zeros((b, c))
        safe_items = np.maximum(items, 0)
        for j in range(history.shape[1]):
            h = history[:, j]
            has = h != PAD
            if not has.any():
                continue
            rows = np.repeat(np.maximum(h, 0), c)
            sims = np.asarray(self.similarity[rows, safe_items.ravel()]).reshape(b, c)
            out += sims * has[:, None]
        out += self.tiebreak[safe_items]
        return np.where(items == PAD, -np.inf, out)
