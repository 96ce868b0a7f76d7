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
        score = ctr[0] + self.purchase_weight * ctcvr[0]
        order = np.argsort(-score, kind="stable")
        return Scored(cands[order], ctr[0][order], ctcvr[0][order], score[order])

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
