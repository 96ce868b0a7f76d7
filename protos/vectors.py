"""The one place where numpy arrays become Vector / Matrix / NamedTensor messages and back."""

from __future__ import annotations

import math

import numpy as np

from protos.tandem.v1 import tandem_pb2 as pb

FLOAT32 = np.dtype("<f4")
MAX_FLOATS = 1 << 20  # default bound on floats accepted in one message field


def _decode(data: bytes, count: int, what: str, max_floats: int) -> np.ndarray:
    # The size bound is checked before anything is decoded, so a forged header allocates nothing.
    if count > max_floats:
        raise ValueError(f"{what} holds {count} floats, more than the limit of {max_floats}")
    if len(data) != 4 * count:
        raise ValueError(f"{what}: expected {4 * count} bytes, got {len(data)}")
    arr = np.frombuffer(data, dtype=FLOAT32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr.astype(np.float32)  # a native-endian, writable copy


def vector_to_proto(vec: np.ndarray) -> pb.Vector:
    """A 1-D array as a Vector (cast to float32)."""
    arr = np.ascontiguousarray(vec, dtype=FLOAT32)
    if arr.ndim != 1:
        raise ValueError(f"a vector must be 1-D, got shape {arr.shape}")
    return pb.Vector(dim=arr.shape[0], data=arr.tobytes())


def vector_from_proto(msg: pb.Vector, max_floats: int = MAX_FLOATS) -> np.ndarray:
    """A Vector as a float32 array; ValueError on a wrong length, NaN/inf or over max_floats."""
    return _decode(msg.data, msg.dim, "vector", max_floats)


def matrix_to_proto(mat: np.ndarray) -> pb.Matrix:
    """A 2-D array as a row-major Matrix (cast to float32)."""
    arr = np.ascontiguousarray(mat, dtype=FLOAT32)
    if arr.ndim != 2:
        raise ValueError(f"a matrix must be 2-D, got shape {arr.shape}")
    return pb.Matrix(rows=arr.shape[0], cols=arr.shape[1], data=arr.tobytes())


def matrix_from_proto(msg: pb.Matrix, max_floats: int = MAX_FLOATS) -> np.ndarray:
    """A Matrix as a (rows, cols) float32 array; validated as vector_from_proto."""
    flat = _decode(msg.data, msg.rows * msg.cols, "matrix", max_floats)
    return flat.reshape(msg.rows, msg.cols)


def tensor_to_proto(name: str, arr: np.ndarray) -> pb.NamedTensor:
    """An array of any rank as a row-major NamedTensor (cast to float32)."""
    data = np.ascontiguousarray(arr, dtype=FLOAT32)
    return pb.NamedTensor(name=name, shape=list(data.shape), data=data.tobytes())


def tensor_from_proto(msg: pb.NamedTensor, max_floats: int = MAX_FLOATS) -> tuple[str, np.ndarray]:
    """A NamedTensor as (name, float32 array of its shape); validated as vector_from_proto."""
    shape = tuple(int(d) for d in msg.shape)
    count = math.prod(shape)  # exact: np.prod would wrap around int64 on forged uint32 shapes
    flat = _decode(msg.data, count, f"tensor {msg.name!r}", max_floats)
    return msg.name, flat.reshape(shape)
