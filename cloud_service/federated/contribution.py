"""Contribution of each device's update to a validation loss: leave-one-out influence, first order.

A round applies θ' = θ + Σ_k a_k Δ_k. Leaving device k out changes the applied model by −a_k Δ_k,
so to first order the validation loss L changes by g·a_k Δ_k with g = ∇L(θ); the device's
contribution is the predicted *decrease* −g·Δ_k (mode "first_order"; the aggregation weight a_k
is common to every device of a round under FedAvg and dropped).

Mode "fisher" is the influence-function form (Koh & Liang, "Understanding Black-box Predictions
via Influence Functions", ICML 2017, eq. 2: I = −∇L_testᵀ H⁻¹ ∇ℓ(z)). A device's local steps
give Δ_k ≈ −η ∇L_k(θ), so up-weighting device k by ε moves the optimum by H⁻¹Δ_k ε/η and the
validation loss by g·H⁻¹Δ_k ε/η. The Hessian is replaced by the damped diagonal empirical Fisher
of the validation loss, H ≈ diag(F) + λ with F = mean over examples of the squared per-example
gradient (Martens, "New insights and perspectives on the natural gradient method", JMLR 2020 /
arXiv 2014, §9-11 for the diagonal and damping; Kunstner, Balles & Hennig, "Limitations of the
empirical Fisher approximation for natural gradient descent", NeurIPS 2019, for why it is only a
curvature proxy away from a minimum — hence the damping, and first_order kept as a mode). The
unknown 1/η is replaced by s = mean(F + λ) over the signal's coordinates:

    score_fisher = −g · (Δ ⊙ s / (F + λ))

which equals score_first_order when F is constant, so both modes are in the same units (a
predicted loss decrease) and a round's scores rank the same way under either when F is flat.

Coordinates the signal does not hold (rows of items absent from the validation sample, dense
layers it lacks) have g = 0: an update there scores 0 — the estimate cannot see them.
Higher score = more useful device. Pure numpy: the signal is computed offline (torch) by
`training/federated/contribution_signal.py` and stored beside the model.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tandem_core.federated.update import ModelUpdate

Mode = Literal["first_order", "fisher"]
MODES: tuple[Mode, ...] = ("first_order", "fisher")


class InvalidSignal(ValueError):
    """A stored signal that cannot be decoded or does not fit the updates it should score."""


@dataclass(frozen=True)
class ValidationSignal:
    """The validation loss's gradient and diagonal empirical Fisher at one model version."""

    version: int  # the federated model version the gradient was computed at
    row_ids: np.ndarray  # (k,) int64, strictly increasing: the rows the validation sample uses
    row_grad: np.ndarray  # (k, dim)
    row_fisher: np.ndarray  # (k, dim), ≥ 0
    dense_grad: dict[str, np.ndarray] = field(default_factory=dict)
    dense_fisher: dict[str, np.ndarray] = field(default_factory=dict)
    damping: float = 1e-8  # λ > 0, absolute (the job sets it relative to mean F)
    examples: int = 0  # validation impressions the signal averages over


@dataclass(frozen=True)
class ContributionRule:
    """How the aggregator uses the scores: which mode, and the share of lowest-scoring updates
    of a round to leave out (0 = score and record only)."""

    mode: Mode = "fisher"
    exclude_share: float = 0.0


def _direction(signal: ValidationSignal, mode: Mode) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The vector an update is dotted with: g (first order) or g ⊙ s / (F + λ) (fisher)."""
    rows = signal.row_grad.astype(np.float64)
    dense = {n: g.astype(np.float64) for n, g in signal.dense_grad.items()}
    if mode == "first_order":
        return rows, dense
    if mode != "fisher":
        raise ValueError(f"unknown contribution mode {mode!r}")
    lam = signal.damping
    parts = [signal.row_fisher.ravel(), *(signal.dense_fisher[n].ravel() for n in dense)]
    total = sum(float(np.sum(p, dtype=np.float64)) for p in parts)
    size = sum(p.size for p in parts)
    s = total / size + lam if size else 1.0
    rows = rows * (s / (signal.row_fisher.astype(np.float64) + lam))
    fisher = {n: signal.dense_fisher[n].astype(np.float64) for n in dense}
    dense = {n: g * (s / (fisher[n] + lam)) for n, g in dense.items()}
    return rows, dense


def scores(updates: Sequence[ModelUpdate], signal: ValidationSignal, mode: Mode) -> np.ndarray:
    """Each update's predicted decrease of the validation loss (module docstring); NaN for an
    update with non-finite values. InvalidSignal when row widths or dense shapes disagree."""
    rows, dense = _direction(signal, mode)
    out = np.zeros(len(updates))
    for k, u in enumerate(updates):
        if u.row_deltas.ndim != 2 or (len(u.item_ids) and u.row_deltas.shape[1] != rows.shape[1]):
            raise InvalidSignal(f"row width {u.row_deltas.shape} against {rows.shape[1]}")
        pos = np.searchsorted(signal.row_ids, u.item_ids)
        pos = np.minimum(pos, max(len(signal.row_ids) - 1, 0))
        held = signal.row_ids[pos] == u.item_ids if len(signal.row_ids) else pos < 0
        dot = float(np.sum(rows[pos[held]] * u.row_deltas[held].astype(np.float64)))
        for name, delta in u.dense_deltas.items():
            if name not in dense:
                continue
            if dense[name].shape != delta.shape:
                raise InvalidSignal(f"{name}: shape {delta.shape} against {dense[name].shape}")
            dot += float(np.sum(dense[name] * delta.astype(np.float64)))
        out[k] = -dot if math.isfinite(dot) else math.nan
    return out


def lowest(scores: np.ndarray, share: float, keep: int = 1) -> np.ndarray:
    """Indices of the ⌊share · n⌋ lowest scores (NaN counts as lowest; ties: the earlier update
    first), never so many that fewer than `keep` (≥ 1; the aggregator passes the round's
    quorum) remain: exclusion cannot take a round that reached its quorum below it."""
    n = len(scores)
    k = min(math.floor(share * n + 1e-9), n - max(keep, 1)) if n else 0
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    key = np.where(np.isnan(scores), -np.inf, scores)
    return np.sort(np.argsort(key, kind="stable")[:k])


def exclude_lowest(
    updates: Sequence[ModelUpdate], scores: np.ndarray, share: float
) -> list[ModelUpdate]:
    """The updates kept once the `share` lowest-scoring are left out (see `lowest`)."""
    dropped = set(lowest(scores, share).tolist())
    return [u for k, u in enumerate(updates) if k not in dropped]


# --- the signal's one codec: numpy's .npz (no pickle), as the federated state stores it ------
def encode_signal(signal: ValidationSignal) -> bytes:
    arrays = {
        "version": np.array(signal.version, np.int64),
        "damping": np.array(signal.damping, np.float64),
        "examples": np.array(signal.examples, np.int64),
        "row_ids": signal.row_ids.astype(np.int64),
        "row_grad": signal.row_grad.astype(np.float32),
        "row_fisher": signal.row_fisher.astype(np.float32),
    }
    for name, g in signal.dense_grad.items():
        arrays[f"dense_grad/{name}"] = g.astype(np.float32)
        arrays[f"dense_fisher/{name}"] = signal.dense_fisher[name].astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode_signal(payload: bytes) -> ValidationSignal:
    """The signal, checked (finite, F ≥ 0, λ > 0, shapes alike); InvalidSignal otherwise."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidSignal(f"undecodable signal: {exc}") from None
    try:
        names = sorted(k.split("/", 1)[1] for k in a if k.startswith("dense_grad/"))
        signal = ValidationSignal(
            int(a["version"]), a["row_ids"], a["row_grad"], a["row_fisher"],
            {n: a[f"dense_grad/{n}"] for n in names}, {n: a[f"dense_fisher/{n}"] for n in names},
            float(a["damping"]), int(a["examples"]),
        )  # fmt: skip
    except KeyError as exc:
        raise InvalidSignal(f"signal lacks {exc}") from None
    check_signal(signal)
    return signal


def check_signal(s: ValidationSignal) -> None:
    ids = s.row_ids
    if ids.ndim != 1 or (len(ids) > 1 and not np.all(np.diff(ids) > 0)):
        raise InvalidSignal("row ids must be strictly increasing")
    rows = s.row_grad
    if rows.ndim != 2 or rows.shape != s.row_fisher.shape or len(ids) != len(rows):
        raise InvalidSignal("row gradient and Fisher shapes differ")
    if not (math.isfinite(s.damping) and s.damping > 0):
        raise InvalidSignal("damping must be a positive number")
    pairs = [(s.row_grad, s.row_fisher)] + [
        (g, s.dense_fisher.get(n, np.zeros(0))) for n, g in s.dense_grad.items()
    ]
    for g, f in pairs:
        if g.shape != f.shape:
            raise InvalidSignal("dense gradient and Fisher shapes differ")
        if not (np.isfinite(g).all() and np.isfinite(f).all() and (f >= 0).all()):
            raise InvalidSignal("gradient and Fisher must be finite, the Fisher ≥ 0")
