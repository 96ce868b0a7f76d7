"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field p = 2^521 − 1.

Shamir, "How to Share a Secret", Communications of the ACM 22(11), 1979. The secret s is the
constant term of a random polynomial f of degree t − 1 over GF(p); the share at x is f(x). Any t
shares determine f(0) = s by Lagrange interpolation; any t − 1 shares are consistent with every
value of s (for each candidate there is exactly one polynomial through them), so they reveal
nothing. The server reconstructs many secrets from the shares of the same survivors, so the
Lagrange coefficients at 0 are computed once per set of x's (`LagrangeAtZero`, O(t²)) and each
secret then costs O(t) (`LagrangeAtZero.combine`).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence

PRIME = (1 << 521) - 1  # a Mersenne prime, larger than any 32-byte secret
SECRET_BYTES = 32
SHARE_BYTES = 66  # ⌈521 / 8⌉: one share value as fixed-length big-endian bytes


def split(secret: bytes, t: int, xs: Sequence[int], rng: random.Random | None = None) -> list[int]:
    """Shares f(x) for x in `xs` (distinct, in [1, p)) of a degree t − 1 polynomial with
    f(0) = secret. `rng` defaults to the OS CSPRNG; pass a seeded Random only in tests."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"the secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= t <= len(xs):
        raise ValueError(f"threshold {t} must be in [1, {len(xs)}] (the number of shares)")
    _check_xs(xs)
    draw = rng or secrets.SystemRandom()
    coeffs = [int.from_bytes(secret, "big")] + [draw.randrange(PRIME) for _ in range(t - 1)]
    return [_evaluate(coeffs, x) for x in xs]


def combine(points: Sequence[tuple[int, int]]) -> bytes:
    """The secret f(0) from (x, f(x)) points; needs at least t of them."""
    lagrange = LagrangeAtZero([x for x, _ in points])
    return lagrange.combine([y for _, y in points])


class LagrangeAtZero:
    """λ_i = Π_{j≠i} x_j / (x_j − x_i) mod p for one set of x's, so f(0) = Σ λ_i f(x_i)."""

    def __init__(self, xs: Sequence[int]) -> None:
        _check_xs(xs)
        self.xs = list(xs)
        self.coeffs = []
        for i, xi in enumerate(self.xs):
            num, den = 1, 1
            for j, xj in enumerate(self.xs):
                if j != i:
                    num = num * xj % PRIME
                    den = den * (xj - xi) % PRIME
            self.coeffs.append(num * pow(den, -1, PRIME) % PRIME)

    def combine(self, ys: Sequence[int]) -> bytes:
        """The 32-byte secret from the shares at this object's x's, in the same order."""
        if len(ys) != len(self.xs):
            raise ValueError(f"{len(ys)} shares for {len(self.xs)} x coordinates")
        if any(not 0 <= y < PRIME for y in ys):
            raise ValueError("a share lies outside the field")
        s = sum(c * y for c, y in zip(self.coeffs, ys, strict=True)) % PRIME
        if s >= 1 << (8 * SECRET_BYTES):
            raise ValueError("the shares are inconsistent (the result is not a 32-byte secret)")
        return s.to_bytes(SECRET_BYTES, "big")


def share_to_bytes(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ValueError("a share lies outside the field")
    return y


def _evaluate(coeffs: list[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):  # Horner
        acc = (acc * x + c) % PRIME
    return acc


def _check_xs(xs: Sequence[int]) -> None:
    if any(not 0 < x < PRIME for x in xs):
        raise ValueError("share x coordinates must be in [1, p)")
    if len(set(xs)) != len(xs):
        raise ValueError("share x coordinates must be distinct")
