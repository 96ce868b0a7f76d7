"""The cloud's online recommender: retrieval + the DIN ranker in ONNX Runtime (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloud_service.recommender.retrieval import RetrievalConfig, Retriever
from cloud_service.registry.bundle import ServingBundle
from tandem_core.onnx_session import cpu_session

PAD = -1
POPULAR_FALLBACK = 5000  # enough most-clicked items to fill a list after exclusions


@dataclass(frozen=True)
class Scored:
    item_ids: np.ndarray
    ctr: np.ndarray
    ctcvr: np.ndarray
    score: np.ndarray


class OnlineRecommender:
    """Retrieves a few hundred candidates and ranks them with DIN for one device's request.

    One ONNX Runtime session is shared by all request threads (`run` is thread-safe); each call
    uses `threads` intra-op threads, so concurrency comes from serving several requests at once.
    """

    def __init__(
        self,
        bundle: ServingBundle,
        retrieval: RetrievalConfig,
        purchase_weight: float = 1.0,
        threads: int = 1,
    ) -> None:
        self.bundle = bundle
        self.purchase_weight = purchase_weight
        self.retriever = Retriever(bundle.item_rows, bundle.co_clicks, bundle.popularity, retrieval)
        self.popular_order = np.argsort(-bundle.popularity, kind="stable")[:POPULAR_FALLBACK]
        self.session = cpu_session(bundle.ranker_onnx, threads)
        private = bundle.private_ranker_onnx
        self.private_session = cpu_session(private, threads) if private is not None else None

    def history(self, clicked: np.ndarray) -> np.ndarray:
        """The last `history_len` clicked items as the ranker's (1, L) input.

        Padding is masked out inside the model, so it is left off: scores are the same as with
        the full left-padded window the model was trained on (a unit test checks it) and
        attention costs O(clicks), not O(history_len). One PAD column when there are none.
        """
        tail = np.asarray(clicked, dtype=np.int64)[-self.bundle.history_len :]
        return tail[None, :] if len(tail) else np.full((1, 1), PAD, dtype=np.int64)

    def rank(self, clicked: np.ndarray, candidates: np.ndarray) -> Scored:
        """Score candidates against the click history, best first."""
        cands = np.asarray(candidates, dtype=np.int64)
        if len(cands) == 0:
            empty = np.empty(0, dtype=np.float32)
            return Scored(cands, empty, empty, empty)
        ctr, ctcvr = self.session.run(
            ["ctr", "ctcvr"], {"history": self.history(clicked), "candidates": cands[None, :]}
        )
        return self._ordered(cands, ctr[0], ctcvr[0])

    def popular(self, exclude: np.ndarray, k: int) -> Scored:
        """Most-clicked items not in `exclude` (no model call): the fallback list."""
        banned = set(np.asarray(exclude).tolist())
        top = [i for i in self.popular_order.tolist() if i not in banned][:k]
        ids = np.asarray(top, dtype=np.int64)
        pop = self.bundle.popularity[ids].astype(np.float32)
        share = pop / max(float(self.bundle.popularity.sum()), 1.0)
        return Scored(ids, share, np.zeros_like(share), share)

    def recommend(
        self, clicked: np.ndarray, exclude: np.ndarray, interest: np.ndarray | None, k: int
    ) -> Scored:
        candidates = self.retriever.retrieve(clicked, exclude, interest)
        ranked = self.rank(clicked, candidates)
        return Scored(*(a[:k] for a in (ranked.item_ids, ranked.ctr, ranked.ctcvr, ranked.score)))

    def _ordered(self, cands: np.ndarray, ctr: np.ndarray, ctcvr: np.ndarray) -> Scored:
        score = ctr + self.purchase_weight * ctcvr
        order = np.argsort(-score, kind="stable")
        return Scored(cands[order], ctr[order], ctcvr[order], score[order])

    def rank_rows(self, rows: np.ndarray, weights: np.ndarray, candidates: np.ndarray) -> Scored:
        """Score candidates against a pseudo-history: (M, D) rows, each standing for `weights`
        behaviours (the private mode; ids of the behaviour are never known), best first."""
        cands = np.asarray(candidates, dtype=np.int64)
        if self.private_session is None or len(cands) == 0 or len(rows) == 0:
            return self.rank(np.empty(0, np.int64), cands)  # nothing to attend over
        feeds = {
            "history_rows": np.ascontiguousarray(rows, dtype=np.float32)[None],
            "history_weight": np.ascontiguousarray(weights, dtype=np.float32)[None],
            "candidates": cands[None, :],
        }
        ctr, ctcvr = self.private_session.run(["ctr", "ctcvr"], feeds)
        return self._ordered(cands, ctr[0], ctcvr[0])

    def private_candidates(
        self,
        rows: np.ndarray,
        weights: np.ndarray,
        interest: np.ndarray | None,
        exclude: np.ndarray,
    ) -> np.ndarray:
        """Retrieval without behaviour ids: neighbours of the interest vector (the weighted mean
        of the pseudo-history when none is sent), then the co-click source's share split over
        the pseudo-history's rows by weight (one query per interest, as in MIND: Li et al.,
        CIKM 2019), then popular items."""
        banned = np.asarray(exclude, dtype=np.int64)
        share = weights / max(float(weights.sum()), 1e-6)
        unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)
        if interest is None and share.sum() > 0:  # all-zero weights: no direction to search
            interest = (share @ unit).astype(np.float32)
        base = self.retriever.retrieve(np.empty(0, np.int64), banned, interest)
        budget = np.rint(share * self.retriever.cfg.n_cooccurrence).astype(np.int64).tolist()
        extra = [self._nearest(u, banned, n) for u, n in zip(unit, budget, strict=True)]
        merged = np.concatenate([base, *extra]) if extra else base
        _, first = np.unique(merged, return_index=True)
        return merged[np.sort(first)]

    def _nearest(self, query: np.ndarray, banned: np.ndarray, n: int) -> np.ndarray:
        """The n items whose unit rows score highest against `query`, none of `banned`."""
        n = min(n, self.retriever.n_items - len(banned))
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        scores = self.retriever.unit @ query.astype(np.float32)
        scores[banned] = -np.inf
        top = np.argpartition(-scores, n - 1)[:n]
        return top[np.argsort(-scores[top], kind="stable")]

    def recommend_private(
        self,
        rows: np.ndarray,
        weights: np.ndarray,
        interest: np.ndarray | None,
        exclude: np.ndarray,
        k: int,
    ) -> Scored:
        """The private mode's list: retrieval by interest, DIN over the pseudo-history."""
        candidates = self.private_candidates(rows, weights, interest, exclude)
        ranked = self.rank_rows(rows, weights, candidates)
        return Scored(*(a[:k] for a in (ranked.item_ids, ranked.ctr, ranked.ctcvr, ranked.score)))
