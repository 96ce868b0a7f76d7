"""The rules both ends of a secure-aggregation round share: key-derivation labels, signs, checks."""

from __future__ import annotations

import numpy as np

from tandem_core.federated.secagg import keys, shamir
from tandem_core.federated.secagg.errors import InvalidMessage, RoundAborted
from tandem_core.federated.secagg.messages import KeyAdvert

# the share message: u's shares of s_sk and b at v's x, sealed for v
PLAINTEXT_BYTES = 2 * shamir.SHARE_BYTES
CIPHERTEXT_BYTES = keys.NONCE_BYTES + PLAINTEXT_BYTES + keys.TAG_BYTES


def share_info(round_id: str) -> bytes:
    return b"tandem-secagg/v1/share-key/" + round_id.encode()


def mask_info(round_id: str) -> bytes:
    # symmetric in (u, v): both ends derive the same seed from X25519's symmetric secret
    return b"tandem-secagg/v1/pair-mask/" + round_id.encode()


def pair_sign(u: str, v: str) -> int:
    """The sign of u's copy of the (u, v) pairwise mask: + if u < v, − otherwise."""
    return 1 if u < v else -1


def check_threshold(t: int, n: int) -> None:
    if n < t:
        raise RoundAborted(f"{n} devices, below the threshold t = {t}")
    if 2 * t <= n:
        raise RoundAborted(
            f"threshold t = {t} must exceed half of the {n} devices (else both secrets of a"
            " device could be collected)"
        )


def check_row_ids(ids: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise InvalidMessage(f"{what}: row ids must be a 1-D integer array")
    a = a.astype(np.int64)
    if a.size > 1 and not (np.diff(a) > 0).all():
        raise InvalidMessage(f"{what}: row ids must be sorted and unique")
    return a


def check_uint32(a: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint32 or a.shape != shape:
        got = getattr(a, "shape", None), getattr(a, "dtype", None)
        raise InvalidMessage(f"{what}: expected uint32 of shape {shape}, got {got}")


def distinct(items: list[str], what: str) -> set[str]:
    out = set(items)
    if len(out) != len(items):
        raise InvalidMessage(f"{what}: a device is listed twice")
    return out


def check_roster(roster: list[KeyAdvert]) -> dict[str, KeyAdvert]:
    by_id = {a.device_id: a for a in roster}
    if len(by_id) != len(roster):
        raise InvalidMessage("roster: a device id appears twice")
    all_keys = [k for a in roster for k in (a.c_pk, a.s_pk)]
    if any(len(k) != keys.KEY_BYTES for k in all_keys):
        raise InvalidMessage(f"roster: every public key must be {keys.KEY_BYTES} bytes")
    if len(set(all_keys)) != len(all_keys):
        raise InvalidMessage("roster: a public key appears twice")
    return dict(sorted(by_id.items()))
