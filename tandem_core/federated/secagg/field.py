"""Arithmetic in Z_2^32 (wrapping numpy uint32) and the quantiser that maps floats into it."""

from __future__ import annotations

import math

import numpy as np

MODULUS = 1 << 32


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b mod 2^32."""
    return np.add(a, b, dtype=np.uint32)


def sub(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a − b mod 2^32."""
    return np.subtract(a, b, dtype=np.uint32)


def neg(a: np.ndarray) -> np.ndarray:
    """−a mod 2^32."""
    return np.subtract(np.uint32(0), a, dtype=np.uint32)


class Quantiser:
    """Fixed-point encoding of floats in [−clip, clip] into Z_2^32 so that cohort sums never wrap.

    A value x is clipped, shifted to x + clip ∈ [0, 2·clip] and scaled by
    s = (2^B − 1) / (2·clip), B = 32 − ⌈log2(max_cohort + 1)⌉: one encoded value is at most
    2^B − 1, so a sum of up to max_cohort of them is below 2^32 and the modular sum equals the
    integer sum. Rounding is stochastic (up with probability equal to the fraction), so each
    encoded value is unbiased: E[encode(x)] = (clip(x) + clip) · s.

    Error: each value's rounding error is below 1/s in magnitude, so `decode_sum` of n values
    differs from the sum of the n clipped inputs by less than n/s per coordinate (computed in
    float64; the float32 result adds at most half an ulp of its magnitude). Clipping is a
    separate, deterministic error that the caller chooses through `clip`.
    """

    def __init__(self, clip: float, max_cohort: int) -> None:
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive finite number, got {clip}")
        if not 1 <= max_cohort < (1 << 31):
            raise ValueError(f"max_cohort must be in [1, 2^31), got {max_cohort}")
        self.clip = float(clip)
        self.max_cohort = int(max_cohort)
        self.bits = 32 - math.ceil(math.log2(max_cohort + 1))
        self.scale = ((1 << self.bits) - 1) / (2.0 * self.clip)

    def error_bound(self, n: int | np.ndarray) -> float | np.ndarray:
        """The strict bound n/s on |decode_sum − Σ clipped inputs| per coordinate."""
        return np.asarray(n, np.float64) / self.scale if np.ndim(n) else float(n) / self.scale

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint32 codes of `x` (any shape; NaN is refused), stochastically rounded."""
        v = np.asarray(x, np.float64)
        if np.isnan(v).any():
            raise ValueError("cannot quantise NaN")
        z = (np.clip(v, -self.clip, self.clip) + self.clip) * self.scale
        low = np.floor(z)
        up = rng.random(z.shape) < (z - low)
        q = np.minimum(low + up, float((1 << self.bits) - 1))  # z ≤ 2^B − 1 already; belt
        return q.astype(np.uint32)

    def decode_sum(self, total: np.ndarray, n: int | np.ndarray) -> np.ndarray:
        """The float sum of n encoded values from their modular sum: total/s − n·clip.

        `n` may be an array broadcastable to `total` (rows held by different numbers of devices).
        """
        counts = np.asarray(n, np.int64)
        if (counts < 0).any() or (counts > self.max_cohort).any():
            raise ValueError(f"n must be in [0, {self.max_cohort}]")
        t = np.asarray(total, np.uint32).astype(np.float64)
        return (t / self.scale - counts * self.clip).astype(np.float32)
