"""One federated update: the type devices build, the cloud checks and aggregates, and its one codec.

The same `ModelUpdate` is the device trainer's result, the push on the wire (`to_proto` /
`from_proto`, protobuf `PushRequest`), the durable stream entry (`encode` / `decode`, its
protobuf bytes) and the aggregator's input. Nothing here imports grpc or redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from protos.tandem.v1 import tandem_pb2 as pb
from protos.vectors import matrix_from_proto, matrix_to_proto, tensor_from_proto, tensor_to_proto
from tandem_core.federated.privacy import epsilon


class InvalidUpdate(ValueError):
    """A push that cannot be decoded or breaks a rule; the message names what is wrong."""


@dataclass(frozen=True)
class ModelUpdate:
    """Sparse row deltas + dense deltas of one device, with the counts FedSubAvg weights by."""

    device_id: str
    item_ids: np.ndarray  # (n,) int64, unique
    row_deltas: np.ndarray  # (n, dim) float32
    row_counts: np.ndarray  # (n,) local samples that touched each row
    dense_deltas: dict[str, np.ndarray] = field(default_factory=dict)
    num_samples: int = 1
    round_id: str = ""
    update_id: str = ""
    base_version: int = 0
    epsilon: float = math.inf  # index privacy the device reports (randomized response)
    keep_prob: float = 1.0
    decoy_prob: float = 0.0
    decoy_pool_size: int = 0


@dataclass(frozen=True)
class UpdateLimits:
    """What the receiving model accepts: catalogue size, row width, dense shapes, and the bounds
    on how much one device may weigh — rows per push, samples claimed, the norm of a row delta
    and of the whole update (0 = no norm bound). The norm bounds are hard limits far above an
    honest step (docs/federated.md); the aggregator's clipping is what bounds a device closely."""

    n_items: int
    dim: int
    dense_shapes: dict[str, tuple[int, ...]]
    max_rows: int
    max_samples: int = 10_000
    max_row_norm: float = 0.0
    max_update_norm: float = 0.0


def to_proto(u: ModelUpdate) -> pb.PushRequest:
    return pb.PushRequest(
        device_id=u.device_id, round_id=u.round_id, update_id=u.update_id,
        base_version=u.base_version, item_ids=u.item_ids.tolist(),
        row_deltas=matrix_to_proto(rows_2d(u.row_deltas, len(u.item_ids))),
        row_sample_counts=u.row_counts.tolist(),
        dense_deltas=[tensor_to_proto(n, a) for n, a in sorted(u.dense_deltas.items())],
        num_samples=u.num_samples,
        privacy=pb.PrivacyReport(
            epsilon=u.epsilon, keep_prob=u.keep_prob, decoy_prob=u.decoy_prob,
            decoy_pool_size=u.decoy_pool_size,
        ),
    )  # fmt: skip


def rows_2d(rows: np.ndarray, n: int) -> np.ndarray:
    """`rows` as an (n, dim) matrix. A push with no rows (a dense-only update) keeps its empty
    shape: `reshape(0, -1)` of an empty array is ambiguous and numpy refuses it."""
    if rows.ndim == 2:
        return rows
    return rows.reshape(n, -1) if rows.size else rows.reshape(n, 0)


def from_proto(msg: pb.PushRequest) -> ModelUpdate:
    try:
        rows = matrix_from_proto(msg.row_deltas)
        dense = dict(tensor_from_proto(t) for t in msg.dense_deltas)
    except ValueError as exc:
        raise InvalidUpdate(f"push: {exc}") from None
    return ModelUpdate(
        device_id=msg.device_id, item_ids=np.array(msg.item_ids, dtype=np.int64),
        row_deltas=rows, row_counts=np.array(msg.row_sample_counts, dtype=np.int64),
        dense_deltas=dense, num_samples=int(msg.num_samples), round_id=msg.round_id,
        update_id=msg.update_id, base_version=int(msg.base_version),
        epsilon=msg.privacy.epsilon, keep_prob=msg.privacy.keep_prob,
        decoy_prob=msg.privacy.decoy_prob, decoy_pool_size=msg.privacy.decoy_pool_size,
    )  # fmt: skip


def encode(u: ModelUpdate) -> bytes:
    """The durable form (a stream entry): the wire message's bytes."""
    return bytes(to_proto(u).SerializeToString())


def decode(data: bytes) -> ModelUpdate:
    try:
        msg = pb.PushRequest.FromString(data)
    except Exception as exc:  # protobuf's DecodeError has no stable public base
        raise InvalidUpdate(f"push: undecodable ({type(exc).__name__})") from None
    return from_proto(msg)


def check(u: ModelUpdate, limits: UpdateLimits) -> None:
    """Every field of a push, before anything is stored; InvalidUpdate names what is wrong."""
    n = len(u.item_ids)
    if not u.update_id or len(u.update_id) > 64:
        raise InvalidUpdate("update_id must be 1-64 characters")
    if n > limits.max_rows:
        raise InvalidUpdate(f"{n} rows, more than the limit of {limits.max_rows} per device")
    if len(np.unique(u.item_ids)) != n:
        raise InvalidUpdate("item_ids must be unique")
    if n and (u.item_ids.min() < 0 or u.item_ids.max() >= limits.n_items):
        raise InvalidUpdate(f"item_ids outside the catalogue of {limits.n_items}")
    dim = limits.dim
    if u.row_deltas.shape != (n, dim) and not (n == 0 and u.row_deltas.size == 0):
        raise InvalidUpdate(f"row_deltas must be ({n}, {dim}), got {u.row_deltas.shape}")
    if len(u.row_counts) != n or (n and u.row_counts.min() < 0):
        raise InvalidUpdate("row_sample_counts: one non-negative count per row")
    if u.num_samples < 1 or (n and u.row_counts.max() > u.num_samples):
        raise InvalidUpdate("num_samples must be ≥ 1 and ≥ every row's count")
    if u.num_samples > limits.max_samples:
        raise InvalidUpdate(f"num_samples {u.num_samples} above the limit of {limits.max_samples}")
    for name, delta in u.dense_deltas.items():
        if limits.dense_shapes.get(name) != delta.shape:
            raise InvalidUpdate(f"dense delta {name!r}: unknown layer or wrong shape")
    check_norms(u, limits)
    check_privacy(u)


def check_norms(u: ModelUpdate, limits: UpdateLimits) -> None:
    """Every value finite, and no row delta nor the whole update above its hard bound.

    Computed in float64 from the pushed values only — never against the current model — so
    whatever the model holds, an honest push's verdict does not depend on what others pushed."""
    arrays = [u.row_deltas, *u.dense_deltas.values()]
    if not all(np.isfinite(a).all() for a in arrays):
        raise InvalidUpdate("deltas contain NaN or infinite values")
    rows = u.row_deltas.astype(np.float64).reshape(len(u.item_ids), limits.dim)
    row_sq = np.sum(rows**2, axis=1)
    total = float(row_sq.sum()) + sum(float(np.sum(d.astype(np.float64) ** 2)) for d in arrays[1:])
    if limits.max_row_norm > 0 and len(row_sq) and row_sq.max() > limits.max_row_norm**2:
        worst = int(u.item_ids[int(np.argmax(row_sq))])
        raise InvalidUpdate(f"row delta of item {worst}: L2 norm above {limits.max_row_norm}")
    if limits.max_update_norm > 0 and total > limits.max_update_norm**2:
        raise InvalidUpdate(f"update L2 norm {math.sqrt(total):.3g} above {limits.max_update_norm}")


def check_privacy(u: ModelUpdate) -> None:
    """The reported ε must be the one its p and q give (a device may not understate it)."""
    if not 0 < u.keep_prob <= 1 or not 0 <= u.decoy_prob < 1:
        raise InvalidUpdate("privacy: keep_prob in (0, 1], decoy_prob in [0, 1)")
    try:
        expected = epsilon(u.keep_prob, u.decoy_prob)
    except ValueError as exc:
        raise InvalidUpdate(f"privacy: {exc}") from None
    if not (math.isinf(expected) and math.isinf(u.epsilon)) and not math.isclose(
        expected, u.epsilon, rel_tol=1e-6, abs_tol=1e-9
    ):
        raise InvalidUpdate(f"privacy: epsilon {u.epsilon} does not match p and q ({expected})")
