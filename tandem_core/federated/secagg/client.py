"""One device's side of a secure-aggregation round (Bonawitz et al., CCS 2017; see protocol.py)."""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tandem_core.federated.secagg import keys, masks, shamir
from tandem_core.federated.secagg.errors import InvalidMessage, RoundAborted, WrongStage
from tandem_core.federated.secagg.messages import (
    EncryptedShare,
    KeyAdvert,
    MaskedInput,
    SecAggParams,
    UnmaskShares,
)
from tandem_core.federated.secagg.rules import (
    PLAINTEXT_BYTES,
    check_roster,
    check_row_ids,
    check_threshold,
    check_uint32,
    distinct,
    mask_info,
    pair_sign,
    share_info,
)


class SecAggClient:
    """One device's side of one round. Holds its secret keys, b_u and the shares it received.

    Every secret (the X25519 keys, b_u, the Shamir polynomials, the AES-GCM nonces) comes from
    the OS CSPRNG. `rng` is accepted for API compatibility and draws nothing secret: a numpy
    Generator is not a cryptographic generator. Each step can be repeated with the same inputs
    (the same answer, e.g. for a retried RPC); a repeat with different inputs is refused, since
    two masked inputs under the same masks would reveal their difference.
    """

    def __init__(
        self, device_id: str, params: SecAggParams, rng: np.random.Generator | None = None
    ) -> None:
        self.device_id, self.params = device_id, params
        self._c_sk, self._s_sk = keys.generate(), keys.generate()
        self._b = secrets.token_bytes(masks.SEED_BYTES)
        self._random = secrets.SystemRandom()
        self._roster: dict[str, KeyAdvert] | None = None
        self._shares_out: list[EncryptedShare] = []
        self._own: tuple[int, int] = (0, 0)  # own shares of (s_sk, b) at its own x
        self._received: dict[str, tuple[int, int]] = {}  # peer -> its (s_sk, b) shares for u
        self._masked: MaskedInput | None = None
        self._masked_args: tuple[bytes, ...] = ()
        self._revealed_s: set[str] = set()
        self._revealed_b: set[str] = set()

    def advertise(self) -> KeyAdvert:
        """AdvertiseKeys: (c_pk, s_pk)."""
        return KeyAdvert(
            self.device_id, keys.public_bytes(self._c_sk), keys.public_bytes(self._s_sk)
        )

    def share_keys(self, roster: list[KeyAdvert]) -> list[EncryptedShare]:
        """ShareKeys: one sealed message per other member of U1: its shares of s_sk and b."""
        by_id = check_roster(roster)
        if self._roster is not None:
            if by_id != self._roster:
                raise InvalidMessage("share_keys: a second, different roster")
            return list(self._shares_out)
        if by_id.get(self.device_id) != self.advertise():
            raise InvalidMessage("roster: this device is missing or listed with other keys")
        check_threshold(self.params.threshold, len(by_id))
        t, xs = self.params.threshold, list(range(1, len(by_id) + 1))
        s_sh = shamir.split(keys.private_bytes(self._s_sk), t, xs, self._random)
        b_sh = shamir.split(self._b, t, xs, self._random)
        out = []
        for k, (peer, advert) in enumerate(by_id.items()):
            if peer == self.device_id:
                self._own = (s_sh[k], b_sh[k])
                continue
            plain = shamir.share_to_bytes(s_sh[k]) + shamir.share_to_bytes(b_sh[k])
            key = self._agree(self._c_sk, advert.c_pk, share_info(self.params.round_id))
            box = keys.encrypt(key, plain, self.params.round_id, self.device_id, peer)
            out.append(EncryptedShare(self.device_id, peer, box))
        self._roster, self._shares_out = by_id, out
        return list(out)

    def masked_input(
        self, rows: np.ndarray, held: np.ndarray, dense: np.ndarray,
        shares_in: list[EncryptedShare], intersections: dict[str, np.ndarray],
    ) -> MaskedInput:  # fmt: skip
        """MaskedInputCollection: y_u = x_u + PRG(b_u) + Σ_v ±PRG(s_uv) over the shared rows.

        `intersections` must name exactly the peers that sent u a share (U2 \\ {u}); each I_uv
        a sorted subset of `held`."""
        if self._roster is None:
            raise WrongStage("masked_input before share_keys")
        p, held = self.params, check_row_ids(held, "held")
        check_uint32(rows, (len(held), p.row_width), "rows")
        check_uint32(dense, (p.dense_len,), "dense")
        fingerprint = (rows.tobytes(), held.tobytes(), dense.tobytes())
        if self._masked is not None:
            if fingerprint != self._masked_args:
                raise InvalidMessage("masked_input: a second, different input under the same masks")
            return self._masked
        received = self._open_shares(shares_in)
        if set(intersections) != set(received):
            raise InvalidMessage("intersections must name exactly the peers that sent a share")
        if len(received) + 1 < p.threshold:
            raise RoundAborted(f"{len(received) + 1} devices shared keys, below t = {p.threshold}")
        length = masks.mask_length(len(held), p.row_width, p.dense_len)
        m_rows, m_dense = masks.as_segments(
            masks.self_mask(self._b, length), len(held), p.row_width
        )
        y_rows, y_dense = rows + m_rows, dense + m_dense
        for peer in sorted(received):
            shared = check_row_ids(intersections[peer], f"intersection with {peer}")
            pos = np.searchsorted(held, shared)
            if len(shared) and (pos.max() >= len(held) or (held[pos] != shared).any()):
                raise InvalidMessage(f"intersection with {peer} is not a subset of held rows")
            seed = self._agree(self._s_sk, self._roster[peer].s_pk, mask_info(p.round_id))
            mask = masks.pair_mask(seed, masks.mask_length(len(shared), p.row_width, p.dense_len))
            pr, pd = masks.as_segments(mask, len(shared), p.row_width)
            if pair_sign(self.device_id, peer) > 0:
                y_rows[pos] += pr
                y_dense += pd
            else:
                y_rows[pos] -= pr
                y_dense -= pd
        self._received = received
        self._masked, self._masked_args = MaskedInput(self.device_id, y_rows, y_dense), fingerprint
        return self._masked

    def unmask(self, survivors: list[str], dropped: list[str]) -> UnmaskShares:
        """Unmasking: shares of b for survivors (U3, including u), of s_sk for dropped (U2 \\ U3).

        Refused unless survivors and dropped are disjoint, together exactly U2, survivors ≥ t
        with u among them, and no peer's other secret was revealed by an earlier answer."""
        if self._masked is None:
            raise WrongStage("unmask before masked_input")
        alive, gone = distinct(survivors, "survivors"), distinct(dropped, "dropped")
        if alive & gone:
            raise InvalidMessage(f"unmask: {sorted(alive & gone)} both survived and dropped")
        if alive | gone != {*self._received, self.device_id}:
            raise InvalidMessage("unmask: survivors and dropped must together be the devices of U2")
        if self.device_id not in alive:
            raise InvalidMessage("unmask: this device sent its input but is not a survivor")
        if len(alive) < self.params.threshold:
            raise RoundAborted(f"{len(alive)} survivors, below t = {self.params.threshold}")
        if alive & self._revealed_s or gone & self._revealed_b:
            raise InvalidMessage("unmask: contradicts an earlier answer (both secrets of a peer)")
        shares = {**self._received, self.device_id: self._own}
        self._revealed_s |= gone
        self._revealed_b |= alive
        return UnmaskShares(
            self.device_id,
            s_shares={v: shares[v][0] for v in sorted(gone)},
            b_shares={v: shares[v][1] for v in sorted(alive)},
        )

    def _open_shares(self, shares_in: list[EncryptedShare]) -> dict[str, tuple[int, int]]:
        assert self._roster is not None
        out: dict[str, tuple[int, int]] = {}
        for e in shares_in:
            if e.receiver != self.device_id or e.sender == self.device_id:
                raise InvalidMessage(f"share {e.sender} → {e.receiver} is not addressed to u")
            if e.sender not in self._roster or e.sender in out:
                raise InvalidMessage(f"share from {e.sender}: not in the roster, or twice")
            key = self._agree(
                self._c_sk, self._roster[e.sender].c_pk, share_info(self.params.round_id)
            )
            try:
                plain = keys.decrypt(key, e.ciphertext, self.params.round_id, e.sender, e.receiver)
            except keys.CryptoError as exc:
                raise InvalidMessage(str(exc)) from None
            if len(plain) != PLAINTEXT_BYTES:
                raise InvalidMessage(f"share from {e.sender}: wrong length")
            try:
                s, b = (
                    shamir.share_from_bytes(plain[i : i + shamir.SHARE_BYTES])
                    for i in (0, shamir.SHARE_BYTES)
                )
            except ValueError as exc:
                raise InvalidMessage(f"share from {e.sender}: {exc}") from None
            out[e.sender] = (s, b)
        return out

    @staticmethod
    def _agree(private: X25519PrivateKey, peer: bytes, info: bytes) -> bytes:
        try:
            return keys.agree(private, peer, info)
        except keys.CryptoError as exc:
            raise InvalidMessage(str(exc)) from None
