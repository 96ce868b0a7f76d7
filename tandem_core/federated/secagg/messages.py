"""The protocol's parameters and messages, with `to_bytes` / `from_bytes` for protobuf or Redis.

Plain frozen dataclasses of str, bytes, int and uint32 arrays (Bonawitz et al., CCS 2017, §4:
the messages of AdvertiseKeys, ShareKeys, MaskedInputCollection and Unmasking). `from_bytes`
raises InvalidMessage on anything malformed; what the values mean is checked by the client and
server that receive them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tandem_core.federated.secagg import shamir
from tandem_core.federated.secagg.wire import Reader, Writer


@dataclass(frozen=True)
class SecAggParams:
    """One round's fixed parameters: t of t-of-n, and the shape of every masked input."""

    round_id: str
    threshold: int
    row_width: int
    dense_len: int

    def __post_init__(self) -> None:
        if not self.round_id:
            raise ValueError("round_id must not be empty")
        if self.threshold < 1 or self.row_width < 1 or self.dense_len < 0:
            raise ValueError("threshold and row_width must be ≥ 1, dense_len ≥ 0")

    def to_bytes(self) -> bytes:
        w = Writer(b"SAp1").text(self.round_id).u32(self.threshold).u32(self.row_width)
        return w.u32(self.dense_len).done()

    @classmethod
    def from_bytes(cls, data: bytes) -> SecAggParams:
        r = Reader(data, b"SAp1", "params")
        out = cls(r.text(), r.u32(), r.u32(), r.u32())
        r.end()
        return out


@dataclass(frozen=True)
class KeyAdvert:
    """AdvertiseKeys: c_pk encrypts the shares sent to the device, s_pk agrees mask seeds."""

    device_id: str
    c_pk: bytes
    s_pk: bytes

    def to_bytes(self) -> bytes:
        return Writer(b"SAk1").text(self.device_id).blob(self.c_pk).blob(self.s_pk).done()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyAdvert:
        r = Reader(data, b"SAk1", "key advert")
        out = cls(r.text(), r.blob(), r.blob())
        r.end()
        return out


@dataclass(frozen=True)
class EncryptedShare:
    """ShareKeys: the sender's shares of its s_sk and b for the receiver, sealed for it."""

    sender: str
    receiver: str
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        return Writer(b"SAe1").text(self.sender).text(self.receiver).blob(self.ciphertext).done()

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedShare:
        r = Reader(data, b"SAe1", "encrypted share")
        out = cls(r.text(), r.text(), r.blob())
        r.end()
        return out


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """MaskedInputCollection: y_u over the device's rows (len(P_u), row_width) and dense segment."""

    device_id: str
    rows: np.ndarray  # (len(P_u), row_width) uint32
    dense: np.ndarray  # (dense_len,) uint32

    def to_bytes(self) -> bytes:
        return Writer(b"SAm1").text(self.device_id).array(self.rows).array(self.dense).done()

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedInput:
        r = Reader(data, b"SAm1", "masked input")
        out = cls(r.text(), r.array(2), r.array(1))
        r.end()
        return out


@dataclass(frozen=True)
class UnmaskShares:
    """Unmasking: shares of the dropped devices' s_sk and of the survivors' b (never both for
    one device)."""

    device_id: str
    s_shares: dict[str, int] = field(default_factory=dict)  # dropped peer -> share of its s_sk
    b_shares: dict[str, int] = field(default_factory=dict)  # surviving peer -> share of its b

    def to_bytes(self) -> bytes:
        w = Writer(b"SAu1").text(self.device_id)
        for shares in (self.s_shares, self.b_shares):
            w.u32(len(shares))
            for peer, y in sorted(shares.items()):
                w.text(peer).fixed(shamir.share_to_bytes(y))
        return w.done()

    @classmethod
    def from_bytes(cls, data: bytes) -> UnmaskShares:
        r = Reader(data, b"SAu1", "unmask shares")
        device = r.text()
        maps: list[dict[str, int]] = []
        for _ in range(2):
            n = r.u32()
            if n > len(data):  # each entry takes bytes; a bigger count is a lie
                raise r.error("an entry count larger than the message")
            m: dict[str, int] = {}
            for _ in range(n):
                peer = r.text()
                try:
                    m[peer] = shamir.share_from_bytes(r.take(shamir.SHARE_BYTES))
                except ValueError as exc:
                    raise r.error(str(exc)) from None
            if len(m) != n:
                raise r.error("a peer appears twice")
            maps.append(m)
        r.end()
        return cls(device, maps[0], maps[1])
