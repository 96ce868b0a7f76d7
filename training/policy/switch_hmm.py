"""Soft shift labels from device logs: a two-state switch model of each pool's life, fit by EM.

Each cached pool's life (the pages it served until the next refresh) is a hidden Markov chain:
z = 0 "the user still wants what the pool was built around", z = 1 "switched away", absorbing,
entered with a per-page hazard. A shown item is clicked with a probability that depends on z,
on whether its category is one the pool was built around (share ≥ LOW_SHARE × the top share),
on its page position and on whether the pool was built after a click of the session. Baum–Welch
fits these from clicks alone (Rabiner, "A tutorial on hidden Markov models and selected
applications in speech recognition", Proc. IEEE 1989); the smoothed posterior P(z | the whole
pool's life) is the label. Nothing here reads the world's intent or switch flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PoolLives:
    """Pages grouped by the pool that served them, padded to the longest life."""

    on: np.ndarray  # (n, L, P) int: the item's category is one the pool was built around
    clicked: np.ndarray  # (n, L, P) bool
    shown: np.ndarray  # (n, L, P) bool: a real item at that position
    informed: np.ndarray  # (n,) int: the pool was built after a click of the session
    pages: np.ndarray  # (n, L) bool: a real page

    @staticmethod
    def pack(lives: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]) -> PoolLives:
        """From [(on (l, P), clicked (l, P), shown (l, P), informed)] per pool."""
        n, length = len(lives), max(len(life[0]) for life in lives)
        width = lives[0][0].shape[1]
        arrays = [np.zeros((n, length, width), dtype=d) for d in (np.int64, bool, bool)]
        pages = np.zeros((n, length), dtype=bool)
        for k, (on, clicked, shown, _) in enumerate(lives):
            for a, v in zip(arrays, (on, clicked, shown), strict=True):
                a[k, : len(v)] = v
            pages[k, : len(on)] = True
        informed = np.array([life[3] for life in lives], dtype=np.int64)
        return PoolLives(arrays[0], arrays[1], arrays[2], informed, pages)


@dataclass
class SwitchHMM:
    """Hazard per page and click probabilities [informed, z, on, position]."""

    hazard: float
    click: np.ndarray

    @staticmethod
    def initial(width: int) -> SwitchHMM:
        click = np.full((2, 2, 2, width), 0.03)
        click[:, 0, 1] = 0.15  # before a switch, what the pool was built around gets clicked
        return SwitchHMM(0.1, click)

    def emissions(self, lives: PoolLives) -> np.ndarray:
        """(n, L, 2) likelihood of each page's clicks under z = 0, 1 (1 on padding)."""
        pos = np.broadcast_to(np.arange(lives.on.shape[2]), lives.on.shape)
        inf = np.broadcast_to(lives.informed[:, None, None], lives.on.shape)
        out = np.empty((*lives.pages.shape, 2))
        for z in (0, 1):
            p = self.click[inf, z, lives.on, pos]
            lik = np.where(lives.shown, np.where(lives.clicked, p, 1.0 - p), 1.0)
            out[..., z] = lik.prod(axis=2)
        return out

    def posteriors(self, lives: PoolLives) -> tuple[np.ndarray, np.ndarray, float, float, float]:
        """Smoothed and filtered P(z = 1) per page (n, L), expected switches, the pages that
        could switch, log-likelihood."""
        e, h = self.emissions(lives), self.hazard
        n, length = lives.pages.shape
        alpha, scale = np.zeros((n, length, 2)), np.zeros((n, length))
        alpha[:, 0] = e[:, 0] * np.array([1.0, 0.0])  # the first page: the pool's own intent
        for j in range(length):
            if j:
                prev = alpha[:, j - 1]
                alpha[:, j] = np.stack([prev[:, 0] * (1 - h), prev[:, 0] * h + prev[:, 1]], 1)
                alpha[:, j] *= e[:, j]
            scale[:, j] = alpha[:, j].sum(1)
            alpha[:, j] /= scale[:, j, None]
        beta = np.ones((n, length, 2))
        switches = exposure = 0.0
        for j in range(length - 1, 0, -1):
            nxt = e[:, j] * beta[:, j]
            beta[:, j - 1, 0] = ((1 - h) * nxt[:, 0] + h * nxt[:, 1]) / scale[:, j]
            beta[:, j - 1, 1] = nxt[:, 1] / scale[:, j]
            real = lives.pages[:, j]
            moved = alpha[:, j - 1, 0] * h * nxt[:, 1] / scale[:, j]
            switches += float(moved[real].sum())
            exposure += float((alpha[:, j - 1, 0] * beta[:, j - 1, 0])[real].sum())
        gamma = alpha * beta
        gamma /= gamma.sum(2, keepdims=True)
        loglik = float(np.log(scale[lives.pages]).sum())
        return gamma[..., 1], alpha[..., 1], switches, exposure, loglik

    def fit(self, lives: PoolLives, iters: int = 25) -> list[float]:
        """Baum–Welch; returns the log-likelihood per iteration (non-decreasing)."""
        trace = []
        pos = np.broadcast_to(np.arange(lives.on.shape[2]), lives.on.shape)
        inf = np.broadcast_to(lives.informed[:, None, None], lives.on.shape)
        for _ in range(iters):
            p1, _, switches, exposure, loglik = self.posteriors(lives)
            trace.append(loglik)
            num, den = np.zeros_like(self.click), np.zeros_like(self.click)
            for z, w in ((0, 1.0 - p1), (1, p1)):
                weight = np.where(lives.shown, w[..., None], 0.0)
                idx = (inf, np.full_like(inf, z), lives.on, pos)
                np.add.at(num, idx, weight * lives.clicked)
                np.add.at(den, idx, weight)
            self.click = np.clip(num / np.maximum(den, 1e-9), 1e-4, 0.999)
            self.hazard = float(np.clip(switches / max(exposure, 1e-9), 1e-4, 0.9))
        return trace
