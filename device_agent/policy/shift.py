"""Interest-shift score: how far recent behaviour has moved from what the pool was built for."""

from __future__ import annotations

import numpy as np


def category_hist(
    categories: np.ndarray, n_categories: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Normalised (weighted) histogram of categories; zeros when empty."""
    h = np.bincount(categories, weights=weights, minlength=n_categories).astype(np.float64)
    total = h.sum()
    return h / total if total > 0 else h


def click_divergence(
    recent_cats: np.ndarray, recent_clicked: np.ndarray, pool_hist: np.ndarray, decay: float = 0.85
) -> float:
    """Total-variation distance between recent clicks (decayed, newest first) and the pool mix.

    Shrunk toward 0 with few clicks: one click is weak evidence of a new intent.
    """
    clicked = recent_cats[recent_clicked]
    if len(clicked) == 0:
        return 0.0
    ages = np.flatnonzero(recent_clicked[::-1])  # age of each click, 0 = newest event
    w = decay ** ages[::-1].astype(np.float64)
    h = category_hist(clicked, len(pool_hist), w)
    confidence = w.sum() / (w.sum() + 1.0)
    return float(0.5 * np.abs(h - pool_hist).sum() * confidence)


def skip_pressure(skip_streak: int, half: float = 6.0) -> float:
    """Exposures since the last click, squashed to [0, 1); half = streak giving 0.5."""
    return skip_streak / (skip_streak + half)


def shift_score(
    recent_cats: np.ndarray,
    recent_clicked: np.ndarray,
    pool_hist: np.ndarray,
    skip_streak_since_refresh: int,
    steps_since_refresh: int,
    hazard: float = 0.12,
) -> float:
    """Our shift score: 1 − P(no switch since the pool was built), the prior survival
    (1 − hazard)^steps shrunk by the evidence (click divergence from the pool mix + skip pressure).

    `hazard` is a prior per-step switch rate a device can estimate from its own history.
    """
    evidence = click_divergence(recent_cats, recent_clicked, pool_hist) + skip_pressure(
        skip_streak_since_refresh
    )
    return float(1.0 - (1.0 - hazard) ** steps_since_refresh * np.exp(-evidence))


def cosine_drift(
    recent_cats: np.ndarray, recent_clicked: np.ndarray, pool_hist: np.ndarray
) -> float:
    """Baseline: 1 − cos(recent click histogram, pool histogram); 0 without clicks."""
    h = category_hist(recent_cats[recent_clicked], len(pool_hist))
    norm = np.linalg.norm(h) * np.linalg.norm(pool_hist)
    return float(1.0 - h @ pool_hist / norm) if norm > 0 else 0.0


def page_hinkley(signal: np.ndarray, delta: float = 0.005) -> float:
    """Page–Hinkley statistic for a DECREASE in the mean of `signal` (e.g. click indicators).

    Page, "Continuous inspection schemes", Biometrika 1954; form of Gama et al., "A survey on
    concept drift adaptation", ACM CSUR 2014: m_t = Σ (x̄_t − x_i − δ), PH_t = m_t − min_i m_i.
    """
    if len(signal) == 0:
        return 0.0
    x = signal.astype(np.float64)
    running_mean = np.cumsum(x) / np.arange(1, len(x) + 1)
    m = np.cumsum(running_mean - x - delta)
    return float(m[-1] - min(0.0, m.min()))
