"""Candidate retrieval: embedding neighbours of recent behaviour ∪ co-click neighbours ∪ popular."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class RetrievalConfig:
    n_embedding: int = 200  # nearest neighbours of the recent-interest vector
    n_cooccurrence: int = 100  # co-click neighbours of the recent items
    n_popular: int = 50
    recency_decay: float = 0.8  # weight of the i-th most recent behaviour is decay^i


class Retriever:
    """Merges three candidate sources into a few hundred unseen items.

    Exact dot-product search over a normalised table: at 100k × 32 this is ~3 ms; past a few
    million items an ANN index (HNSW, IVF-PQ) would replace `np.argpartition` here.
    """

    def __init__(
        self,
        item_embeddings: np.ndarray,
        cooccurrence: sp.csr_matrix,
        popularity: np.ndarray,
        cfg: RetrievalConfig | None = None,
    ) -> None:
        self.cfg = cfg or RetrievalConfig()
        norms = np.linalg.norm(item_embeddings, axis=1, keepdims=True)
        self.unit = (item_embeddings / np.maximum(norms, 1e-8)).astype(np.float32)
        self.cooccurrence = cooccurrence.tocsr()
        self.popular = np.argsort(-popularity, kind="stable")[: 4 * self.cfg.n_popular]

    @property
    def n_items(self) -> int:
        return int(self.unit.shape[0])

    def interest_vector(self, recent_items: np.ndarray) -> np.ndarray | None:
        """Recency-weighted mean of the recent items' unit embeddings (most recent last)."""
        if len(recent_items) == 0:
            return None
        weights = self.cfg.recency_decay ** np.arange(len(recent_items))[::-1]
        return np.asarray(weights @ self.unit[recent_items], dtype=np.float32)

    def _by_embedding(self, interest: np.ndarray | None, exclude: np.ndarray) -> np.ndarray:
        if interest is None:
            return np.empty(0, dtype=np.int64)
        scores = self.unit @ interest
        scores[exclude] = -np.inf
        n = min(self.cfg.n_embedding, self.n_items - len(exclude))
        top = np.argpartition(-scores, n - 1)[:n]
        return top[np.argsort(-scores[top], kind="stable")]

    def _by_cooccurrence(self, recent_items: np.ndarray) -> np.ndarray:
        if len(recent_items) == 0:
            return np.empty(0, dtype=np.int64)
        summed = np.asarray(self.cooccurrence[recent_items].sum(axis=0)).ravel()
        nz = np.flatnonzero(summed)
        return nz[np.argsort(-summed[nz], kind="stable")][: 2 * self.cfg.n_cooccurrence]

    def retrieve(
        self, recent_items: np.ndarray, exclude: np.ndarray, interest: np.ndarray | None = None
    ) -> np.ndarray:
        """Candidate ids, deduplicated, none in `exclude`; `interest` overrides the derived one."""
        recent = np.asarray(recent_items, dtype=np.int64)
        banned = np.union1d(np.asarray(exclude, dtype=np.int64), recent)
        vec = interest if interest is not None else self.interest_vector(recent)
        sources = [
            self._by_embedding(vec, banned),
            self._by_cooccurrence(recent),
            self.popular,
        ]
        limits = [self.cfg.n_embedding, self.cfg.n_cooccurrence, self.cfg.n_popular]
        out: list[int] = []
        seen = set(banned.tolist())
        for source, limit in zip(sources, limits, strict=True):
            taken = 0
            for item in source.tolist():
                if taken == limit:
                    break
                if item not in seen:
                    seen.add(item)
                    out.append(item)
                    taken += 1
        return np.asarray(out, dtype=np.int64)
