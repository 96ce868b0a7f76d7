"""Batched DIN inference with numpy in and out; the Scorer the held-out evaluation calls."""

from __future__ import annotations

import numpy as np
import torch

from tandem_core.models.din import DinRanker


def rank(
    model: DinRanker, history: np.ndarray, candidates: np.ndarray, max_cells: int = 2_000_000
) -> tuple[np.ndarray, np.ndarray]:
    """(pCTR, pCTCVR) for candidates (B, C) given histories (B, L); PAD = −1 in both.

    Rows are processed in chunks so B·C·L stays under max_cells (bounds attention memory).
    """
    if history.ndim != 2 or candidates.ndim != 2 or len(history) != len(candidates):
        raise ValueError("history and candidates must be 2-D with the same number of rows")
    per_row = max(1, candidates.shape[1] * max(1, history.shape[1]))
    chunk = max(1, max_cells // per_row)
    ctr, ctcvr = [], []
    with torch.inference_mode():
        for lo in range(0, len(candidates), chunk):
            h = torch.from_numpy(np.ascontiguousarray(history[lo : lo + chunk], dtype=np.int64))
            c = torch.from_numpy(np.ascontiguousarray(candidates[lo : lo + chunk], dtype=np.int64))
            p_ctr, p_ctcvr = model(h, c)
            ctr.append(p_ctr.numpy())
            ctcvr.append(p_ctcvr.numpy())
    return np.concatenate(ctr), np.concatenate(ctcvr)


class DinScorer:
    """The DIN ranker behind the simulator's Scorer protocol (scores = pCTR)."""

    name = "din (ours)"

    def __init__(self, model: DinRanker) -> None:
        self.model = model.eval()

    def score(self, users: np.ndarray, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        ctr, _ = rank(self.model, history, items)
        return np.where(items < 0, -np.inf, ctr)
