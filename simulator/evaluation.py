"""Held-out evaluation of a scorer: AUC/GAUC on exposures, NDCG@10/Recall@50 on sessions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.baselines import Scorer
from simulator.dataset import PAD, RankingTask
from simulator.logs import Impressions
from simulator.metrics import auc, gauc, ndcg_at_k, recall_at_k


@dataclass(frozen=True)
class RankerReport:
    name: str
    auc: float
    gauc: float
    ndcg_at_10: float
    recall_at_50: float

    def row(self) -> str:
        return (
            f"| {self.name} | {self.auc:.4f} | {self.gauc:.4f} | "
            f"{self.ndcg_at_10:.4f} | {self.recall_at_50:.4f} |"
        )


TABLE_HEADER = "| model | AUC | GAUC | NDCG@10 | Recall@50 |\n|---|---|---|---|---|"


def score_exposures(
    scorer: Scorer, test: Impressions, history: np.ndarray, batch: int = 4096
) -> np.ndarray:
    """Score every held-out exposure given the click history before its step."""
    scores = np.empty(len(test))
    for lo in range(0, len(test), batch):
        hi = min(lo + batch, len(test))
        items = test.item[lo:hi, None]
        scores[lo:hi] = scorer.score(test.user[lo:hi], history[lo:hi], items)[:, 0]
    return scores


def rank_sessions(scorer: Scorer, task: RankingTask, batch: int = 256) -> tuple[float, float]:
    """Mean NDCG@10 and Recall@50 over held-out sessions that had a click."""
    ndcgs, recalls = [], []
    for lo in range(0, len(task.session), batch):
        sl = slice(lo, lo + batch)
        scores = scorer.score(task.user[sl], task.history[sl], task.candidates[sl])
        for cand, rel, sc in zip(task.candidates[sl], task.relevance[sl], scores, strict=True):
            valid = cand != PAD
            if rel[valid].max(initial=0) == 0:
                continue
            order = np.argsort(-sc[valid], kind="stable")
            ranked_rel = rel[valid][order]
            ndcgs.append(ndcg_at_k(ranked_rel, 10))
            relevant = set(cand[valid][rel[valid] > 0].tolist())
            recalls.append(recall_at_k(cand[valid][order].tolist(), relevant, 50))
    return float(np.mean(ndcgs)), float(np.mean(recalls))


def evaluate_scorer(
    scorer: Scorer, test: Impressions, test_history: np.ndarray, task: RankingTask
) -> RankerReport:
    scores = score_exposures(scorer, test, test_history)
    labels = test.click.astype(np.int64)
    ndcg, recall = rank_sessions(scorer, task)
    return RankerReport(
        scorer.name, auc(labels, scores), gauc(labels, scores, test.user), ndcg, recall
    )
