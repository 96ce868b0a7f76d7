"""A device's push as a domain object, its checks, and its durable encoding (protobuf bytes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cloud_service.errors import InvalidArgument
from protos.tandem.v1 import tandem_pb2 as pb
from protos.vectors import matrix_from_proto, matrix_to_proto, tensor_from_proto, tensor_to_proto


@dataclass(frozen=True)
class ClientPush:
    device_id: str
    round_id: str
    update_id: str
    base_version: int
    item_ids: np.ndarray  # (n,) int64, unique
    row_deltas: np.ndarray  # (n, dim) float32
    row_counts: np.ndarray  # (n,) local samples that touched each row
    dense_deltas: dict[str, np.ndarray] = field(default_factory=dict)
    num_samples: int = 0
    epsilon: float = math.inf  # index privacy the device reports (randomized response)
    keep_prob: float = 1.0
    decoy_prob: float = 0.0
    decoy_pool_size: int = 0


def push_from_proto(msg: pb.PushRequest) -> ClientPush:
    try:
        rows = matrix_from_proto(msg.row_deltas)
        dense = dict(tensor_from_proto(t) for t in msg.dense_deltas)
    except ValueError as exc:
        raise InvalidArgument(f"push: {exc}") from None
    return ClientPush(
        device_id=msg.device_id, round_id=msg.round_id, update_id=msg.update_id,
        base_version=int(msg.base_version), item_ids=np.array(msg.item_ids, dtype=np.int64),
        row_deltas=rows, row_counts=np.array(msg.row_sample_counts, dtype=np.int64),
        dense_deltas=dense, num_samples=int(msg.num_samples),
        epsilon=msg.privacy.epsilon, keep_prob=msg.privacy.keep_prob,
        decoy_prob=msg.privacy.decoy_prob, decoy_pool_size=msg.privacy.decoy_pool_size,
    )  # fmt: skip


def push_to_proto(p: ClientPush) -> pb.PushRequest:
    return pb.PushRequest(
        device_id=p.device_id, round_id=p.round_id, update_id=p.update_id,
        base_version=p.base_version, item_ids=p.item_ids.tolist(),
        row_deltas=matrix_to_proto(p.row_deltas.reshape(len(p.item_ids), -1)),
        row_sample_counts=p.row_counts.tolist(),
        dense_deltas=[tensor_to_proto(n, a) for n, a in sorted(p.dense_deltas.items())],
        num_samples=p.num_samples,
        privacy=pb.PrivacyReport(
            epsilon=p.epsilon, keep_prob=p.keep_prob, decoy_prob=p.decoy_prob,
            decoy_pool_size=p.decoy_pool_size,
        ),
    )  # fmt: skip


def check_push(
    p: ClientPush, n_items: int, dim: int, dense_shapes: dict[str, tuple[int, ...]], max_rows: int
) -> None:
    """Every field of a push, before anything is stored; InvalidArgument names what is wrong."""
    n = len(p.item_ids)
    if not p.update_id or len(p.update_id) > 64:
        raise InvalidArgument("update_id must be 1-64 characters")
    if n > max_rows:
        raise InvalidArgument(f"{n} rows, more than the limit of {max_rows} per device")
    if len(np.unique(p.item_ids)) != n:
        raise InvalidArgument("item_ids must be unique")
    if n and (p.item_ids.min() < 0 or p.item_ids.max() >= n_items):
        raise InvalidArgument(f"item_ids outside the catalogue of {n_items}")
    if p.row_deltas.shape != (n, dim) and not (n == 0 and p.row_deltas.size == 0):
        raise InvalidArgument(f"row_deltas must be ({n}, {dim}), got {p.row_deltas.shape}")
    if len(p.row_counts) != n or (n and p.row_counts.min() < 0):
        raise InvalidArgument("row_sample_counts: one non-negative count per row")
    if p.num_samples < 1 or (n and p.row_counts.max() > p.num_samples):
        raise InvalidArgument("num_samples must be ≥ 1 and ≥ every row's count")
    for name, delta in p.dense_deltas.items():
        if dense_shapes.get(name) != delta.shape:
            raise InvalidArgument(f"dense delta {name!r}: unknown layer or wrong shape")
    check_privacy(p)


def check_privacy(p: ClientPush) -> None:
    """The reported ε must be the one its p and q give (a device may not understate it)."""
    if not 0 < p.keep_prob <= 1 or not 0 <= p.decoy_prob < 1:
        raise InvalidArgument("privacy: keep_prob in (0, 1], decoy_prob in [0, 1)")
    if p.keep_prob == 1 or p.decoy_prob == 0:
        expected = math.inf
    else:
        ratio = p.keep_prob * (1 - p.decoy_prob) / (p.decoy_prob * (1 - p.keep_prob))
        expected = math.log(ratio)
    if not (math.isinf(expected) and math.isinf(p.epsilon)) and not math.isclose(
        expected, p.epsilon, rel_tol=1e-6, abs_tol=1e-9
    ):
        raise InvalidArgument(f"privacy: epsilon {p.epsilon} does not match p and q ({expected})")
