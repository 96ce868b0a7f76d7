"""A small length-prefixed binary codec for the protocol messages (big-endian, bounds-checked)."""

from __future__ import annotations

import struct

import numpy as np

from tandem_core.federated.secagg.errors import InvalidMessage

MAX_ID_BYTES = 128
MAX_BLOB_BYTES = 1 << 12
MAX_ARRAY_VALUES = 1 << 28


class Writer:
    def __init__(self, tag: bytes) -> None:
        self.parts = [tag]

    def u32(self, v: int) -> Writer:
        self.parts.append(struct.pack(">I", v))
        return self

    def text(self, s: str) -> Writer:
        data = s.encode()
        if not 0 < len(data) <= MAX_ID_BYTES:
            raise InvalidMessage(f"an id must be 1-{MAX_ID_BYTES} bytes, got {len(data)}")
        self.parts.append(struct.pack(">H", len(data)) + data)
        return self

    def blob(self, b: bytes) -> Writer:
        self.parts.append(struct.pack(">I", len(b)) + b)
        return self

    def fixed(self, b: bytes) -> Writer:
        self.parts.append(b)
        return self

    def array(self, a: np.ndarray) -> Writer:
        """uint32 values as ndim, each dimension, then little-endian data."""
        a = np.ascontiguousarray(a, dtype="<u4")
        self.parts.append(
            struct.pack(">B", a.ndim) + b"".join(struct.pack(">I", d) for d in a.shape)
        )
        self.parts.append(a.tobytes())
        return self

    def done(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    def __init__(self, data: bytes, tag: bytes, what: str) -> None:
        self.data, self.pos, self.what = memoryview(bytes(data)), len(tag), what
        if bytes(self.data[: len(tag)]) != tag:
            raise InvalidMessage(f"{what}: wrong message tag")

    def error(self, why: str) -> InvalidMessage:
        return InvalidMessage(f"{self.what}: {why}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidMessage(f"{self.what}: truncated")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def text(self) -> str:
        (n,) = struct.unpack(">H", self.take(2))
        if not 0 < n <= MAX_ID_BYTES:
            raise InvalidMessage(f"{self.what}: an id must be 1-{MAX_ID_BYTES} bytes")
        try:
            return self.take(n).decode()
        except UnicodeDecodeError:
            raise InvalidMessage(f"{self.what}: an id is not UTF-8") from None

    def blob(self, limit: int = MAX_BLOB_BYTES) -> bytes:
        n = self.u32()
        if n > limit:
            raise InvalidMessage(f"{self.what}: a field of {n} bytes, above {limit}")
        return self.take(n)

    def array(self, ndim: int) -> np.ndarray:
        (got,) = struct.unpack(">B", self.take(1))
        if got != ndim:
            raise InvalidMessage(f"{self.what}: an array of {got} dimensions, expected {ndim}")
        shape = tuple(self.u32() for _ in range(ndim))
        size = int(np.prod(shape, dtype=np.int64))
        if size > MAX_ARRAY_VALUES:
            raise InvalidMessage(f"{self.what}: an array of {size} values is too large")
        raw = self.take(4 * size)
        return np.frombuffer(raw, dtype="<u4").astype(np.uint32).reshape(shape)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise InvalidMessage(f"{self.what}: {len(self.data) - self.pos} trailing bytes")
