"""A device update as a secure-aggregation input, and the cohort's unmasked sum back as rows.

Layout (the contract's `SecAggParams`): each pulled row carries `dim + 2` values in Z_2^32 —
the row delta weighted by the row's clipped sample count c and quantised, then c itself, then
1 when the device trained the row (c > 0). The dense segment carries the dense deltas weighted
by the clipped sample count w, quantised, in sorted layer order, then w. Summed over a cohort
this gives exactly what FedSubAvg needs (Σ c·δ and Σ c per row, Σ w·δ and Σ w for the layers)
plus the number of devices that trained each row (the contributor floor), and nothing per device.

Decoy rows get c = 0 and a zero delta, like in a plain push; under masking nobody but the device
sees that. Weighting and clipping happen on the device: the server can no longer clip or trim
one device's update, it sees only the sum (docs/federated.md, "what secure aggregation costs").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protos.tandem.v1 import tandem_pb2 as pb
from tandem_core.federated.secagg.field import Quantiser
from tandem_core.federated.update import ModelUpdate


@dataclass(frozen=True)
class SecureParams:
    """The round's fixed parameters; both sides build the same layout from them."""

    threshold: int
    row_width: int  # dim + 2
    dense_len: int  # dense parameters + 1
    row_clip: float
    dense_clip: float
    max_cohort: int
    count_cap: int
    sample_cap: int
    base_version: int

    @property
    def dim(self) -> int:
        return self.row_width - 2

    def to_proto(self) -> pb.SecAggParams:
        return pb.SecAggParams(
            threshold=self.threshold, row_width=self.row_width, dense_len=self.dense_len,
            row_clip=self.row_clip, dense_clip=self.dense_clip, max_cohort=self.max_cohort,
            count_cap=self.count_cap, sample_cap=self.sample_cap, base_version=self.base_version,
        )  # fmt: skip

    @classmethod
    def from_proto(cls, m: pb.SecAggParams) -> SecureParams:
        return cls(
            m.threshold, m.row_width, m.dense_len, m.row_clip, m.dense_clip, m.max_cohort,
            m.count_cap, m.sample_cap, m.base_version,
        )  # fmt: skip

    def row_quantiser(self) -> Quantiser:
        return Quantiser(self.row_clip, self.max_cohort)

    def dense_quantiser(self) -> Quantiser:
        return Quantiser(self.dense_clip, self.max_cohort)


def dense_length(shapes: dict[str, tuple[int, ...]]) -> int:
    """Dense parameters + 1 (the weight)."""
    return sum(int(np.prod(s)) for s in shapes.values()) + 1


def encode(
    update: ModelUpdate, shapes: dict[str, tuple[int, ...]], params: SecureParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(rows (n, dim + 2) uint32, dense (dense_len,) uint32) of one device's update, over
    exactly its pulled rows in `update.item_ids` order."""
    n = len(update.item_ids)
    deltas = np.asarray(update.row_deltas, np.float64).reshape(n, params.dim)
    counts = np.minimum(np.asarray(update.row_counts, np.int64), params.count_cap)
    rows = np.empty((n, params.row_width), np.uint32)
    weighted = np.clip(counts[:, None] * deltas, -params.row_clip, params.row_clip)
    rows[:, : params.dim] = params.row_quantiser().encode(weighted.astype(np.float32), rng)
    rows[:, params.dim] = counts.astype(np.uint32)
    rows[:, params.dim + 1] = (counts > 0).astype(np.uint32)
    w = min(int(update.num_samples), params.sample_cap)
    flat = [
        np.asarray(update.dense_deltas.get(name, np.zeros(shape)), np.float64).reshape(-1)
        for name, shape in sorted(shapes.items())
    ]
    values = np.concatenate(flat) if flat else np.zeros(0)
    if len(values) + 1 != params.dense_len:
        raise ValueError(
            f"dense layers give {len(values) + 1} values, the round's {params.dense_len}"
        )
    dense = np.empty(params.dense_len, np.uint32)
    weighted_dense = np.clip(w * values, -params.dense_clip, params.dense_clip)
    dense[:-1] = params.dense_quantiser().encode(weighted_dense.astype(np.float32), rng)
    dense[-1] = np.uint32(w)
    return rows, dense


@dataclass(frozen=True)
class CohortSum:
    """What the unmasked sum says: per row Σ c·δ, Σ c, devices that trained it; dense Σ w·δ, Σ w."""

    item_ids: np.ndarray  # (n,) int64, sorted
    weighted: np.ndarray  # (n, dim) float64
    counts: np.ndarray  # (n,) float64
    contributors: np.ndarray  # (n,) int64
    dense_weighted: dict[str, np.ndarray]
    weight: float
    inputs: int  # devices whose input is in the sum


def decode(
    item_ids: np.ndarray, row_sums: np.ndarray, dense_sum: np.ndarray, holders: np.ndarray,
    shapes: dict[str, tuple[int, ...]], params: SecureParams, inputs: int,
) -> CohortSum:  # fmt: skip
    """The sum back in floats. `holders[k]` = how many summed inputs covered row k: each added
    its quantiser offset there (the dense segment: every input)."""
    dim = params.dim
    rq, dq = params.row_quantiser(), params.dense_quantiser()
    weighted = np.zeros((len(item_ids), dim))
    for h in np.unique(holders):
        at = holders == h
        weighted[at] = rq.decode_sum(row_sums[at, :dim], int(h))
    dense_vals = dq.decode_sum(dense_sum[:-1], inputs).astype(np.float64)
    dense, start = {}, 0
    for name, shape in sorted(shapes.items()):
        size = int(np.prod(shape))
        dense[name] = dense_vals[start : start + size].reshape(shape)
        start += size
    return CohortSum(
        np.asarray(item_ids, np.int64), weighted, row_sums[:, dim].astype(np.float64),
        row_sums[:, dim + 1].astype(np.int64), dense, float(dense_sum[-1]), inputs,
    )  # fmt: skip


def fedsubavg_step(
    s: CohortSum, max_correction: float, min_contributors: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """FedSubAvg from the sum (Ding et al., NeurIPS 2022; as cloud_service's `fedsubavg`): a
    row's step is Σ c·δ / Σ c (the denominator at least Σ w / max_correction), only for rows at
    least `min_contributors` devices trained; the layers' step is Σ w·δ / Σ w."""
    denom = s.counts.copy()
    if np.isfinite(max_correction) and max_correction > 0:
        denom = np.maximum(denom, s.weight / max_correction)
    keep = (s.contributors >= max(1, min_contributors)) & (denom > 0)
    delta = (s.weighted[keep] / denom[keep, None]).astype(np.float32)
    dense = (
        {n: (v / s.weight).astype(np.float32) for n, v in s.dense_weighted.items()}
        if s.weight > 0
        else {}
    )
    return s.item_ids[keep], delta, dense
