"""The masks' PRG: a ChaCha20 keystream read as little-endian uint32, one per seed and purpose.

Bonawitz et al. (CCS 2017, §4) expand each agreed pairwise seed s_uv and each self-mask seed b_u
with a PRG; here ChaCha20 (RFC 8439) from `cryptography`, whose 16-byte nonce is the initial
32-bit block counter (0) followed by a 12-byte label that separates pairwise from self masks.
A keystream of 2^32 blocks (256 GiB) bounds the length, far above any model here.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

SEED_BYTES = 32
_PAIR_NONCE = b"\x00\x00\x00\x00" + b"secagg-pair "
_SELF_NONCE = b"\x00\x00\x00\x00" + b"secagg-self "


def expand(seed: bytes, length: int, nonce: bytes) -> np.ndarray:
    """`length` uint32 values of the ChaCha20 keystream of (seed, nonce)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    if length < 0:
        raise ValueError("negative mask length")
    stream = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    data = stream.update(bytes(4 * length))
    return np.frombuffer(data, dtype="<u4").astype(np.uint32, copy=False)


def pair_mask(seed: bytes, length: int) -> np.ndarray:
    """PRG(s_uv): the mask u adds and v subtracts (or the reverse) over their shared rows."""
    return expand(seed, length, _PAIR_NONCE)


def self_mask(seed: bytes, length: int) -> np.ndarray:
    """PRG(b_u): the mask only u adds, removed by the server from the shares of b_u."""
    return expand(seed, length, _SELF_NONCE)


def mask_length(n_rows: int, row_width: int, dense_len: int) -> int:
    """A mask's length: n_rows rows (flattened in row-id order), then the dense segment."""
    return n_rows * row_width + dense_len


def as_segments(mask: np.ndarray, n_rows: int, row_width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n_rows, row_width), dense) views of one mask vector."""
    cut = n_rows * row_width
    return mask[:cut].reshape(n_rows, row_width), mask[cut:]
