"""Held-out scorers of the private mode, and how much of the history its vectors give away."""

from __future__ import annotations

import numpy as np
import torch

from device_agent.inference.interest_encoder import mean_row
from tandem_core.behavior import gather_rows
from tandem_core.models.din import DinRanker
from training.private_mode.distill import encode
from training.private_mode.encoder import InterestEncoder
from training.ranker.scoring import DinScorer


class PrivateScorer:
    """DIN over the encoder's pseudo-history of each history's rows (pCTR); a history without
    clicks is scored as the cloud serves it, with no history at all."""

    def __init__(self, ranker: DinRanker, encoder: InterestEncoder, table: np.ndarray) -> None:
        self.name = f"private (pseudo-history, M={encoder.cfg.n_interests})"
        self.ranker, self.encoder, self.table = ranker.eval(), encoder.eval(), table

    def score(self, users: np.ndarray, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.empty(items.shape, dtype=np.float64)
        for lo in range(0, len(items), 1024):
            part = slice(lo, lo + 1024)
            hist, cands = history[part], torch.from_numpy(np.maximum(items[part], 0))
            with torch.inference_mode():
                vectors, weights = encode(self.encoder, self.table, hist)
                p_rows, _ = self.ranker.forward_rows(vectors, weights, cands)
                p_none, _ = self.ranker(torch.full((len(hist), 1), -1), cands)
            has = torch.from_numpy((hist >= 0).any(axis=1))[:, None]
            out[part] = torch.where(has, p_rows, p_none).numpy()
        return np.where(items < 0, -np.inf, out)


class MeanRowScorer:
    """DIN over the mean of the history's rows (one row, weight = clicks): the private mode's
    fallback without an encoder."""

    name = "fallback (mean row, no encoder)"

    def __init__(self, ranker: DinRanker, table: np.ndarray) -> None:
        self.ranker, self.table = ranker.eval(), table

    def score(self, users: np.ndarray, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        rows = gather_rows(self.table, history)  # zeros at PAD
        clicks = (history >= 0).sum(axis=1).astype(np.float32)
        mean = rows.sum(axis=1) / np.maximum(clicks, 1.0)[:, None]  # mean_row, batched
        with torch.inference_mode():
            p, _ = self.ranker.forward_rows(
                torch.from_numpy(mean[:, None, :]),
                torch.from_numpy(clicks[:, None]),  # weight 0 without clicks: no history
                torch.from_numpy(np.maximum(items, 0)),
            )
        return np.where(items < 0, -np.inf, p.numpy())


class NoHistoryScorer:
    """DIN with an empty history: a reference for what the history is worth."""

    name = "no history (reference)"

    def __init__(self, ranker: DinRanker) -> None:
        self.din = DinScorer(ranker)

    def score(self, users: np.ndarray, history: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.din.score(users, np.full((len(history), 1), -1, np.int64), items)


def nearest_items(unit: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The catalogue item whose unit row has the highest cosine with each vector."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)
    return np.argmax(v @ unit.T, axis=1)


def reidentified(
    encoder: InterestEncoder, table: np.ndarray, history: np.ndarray, n: int, seed: int
) -> dict[str, float]:
    """Nearest-row decoding by an honest-but-curious cloud, on `n` held-out histories: the
    share of sent rows whose nearest catalogue row is one of the device's clicks, and the share
    of clicks so recovered, for the encoder's pseudo-history and for the fallback's mean row."""
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-8)
    rows = history[(history >= 0).any(axis=1)]
    rows = rows[np.random.default_rng(seed).permutation(len(rows))[:n]]
    with torch.inference_mode():
        vectors, weights = encode(encoder, table, rows)
    out: dict[str, list[float]] = {k: [] for k in REIDENTIFIED}
    for hist, vec, w in zip(rows, vectors.numpy(), weights.numpy(), strict=True):
        clicks = set(hist[hist >= 0].tolist())
        for what, sent in (("set", vec[w > 1e-3] if (w > 1e-3).any() else vec),
                           ("mean", mean_row(table[hist[hist >= 0]])[0])):  # fmt: skip
            guesses = nearest_items(unit, sent).tolist()
            out[f"{what}_rows_on_a_click"].append(float(np.mean([g in clicks for g in guesses])))
            out[f"{what}_clicks_recovered"].append(len(set(guesses) & clicks) / len(clicks))
    return {k: float(np.mean(v)) for k, v in out.items()}


REIDENTIFIED = (
    "set_rows_on_a_click", "set_clicks_recovered", "mean_rows_on_a_click", "mean_clicks_recovered",
)  # fmt: skip
