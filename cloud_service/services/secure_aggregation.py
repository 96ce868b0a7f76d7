"""SecureAggregate: a device's stages of a secure-aggregation round, checked and durably stored.

The protocol is Bonawitz et al., CCS 2017 (honest-but-curious server): AdvertiseKeys, ShareKeys,
MaskedInputCollection, Unmasking. The parameter server takes one message per device and stage,
only in the stage's phase and only from the devices the phase admits (selected → roster U1 →
senders U2 → survivors U3); the aggregator (cloud_service/federated/secure_rounds.py) moves the
phases and unmasks the sum. Messages are stored as the contract's protobuf bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from cloud_service.auth import DeviceAuth
from cloud_service.errors import InvalidArgument, Unavailable
from cloud_service.store.base import StoreUnavailable
from cloud_service.store.federated_state import FederatedState
from cloud_service.store.secagg_state import SecAggPhase, SecAggState
from protos.tandem.v1 import tandem_pb2 as pb
from tandem_core.federated.secagg.rules import CIPHERTEXT_BYTES
from tandem_core.federated.secagg.shamir import PRIME
from tandem_core.federated.secure_update import SecureParams

KEY_BYTES = 32
M = TypeVar("M", pb.SecAggKeys, pb.SecAggShares, pb.SecAggMasked, pb.SecAggUnmask,
            pb.SecAggResponse)  # fmt: skip
MAX_SHARE = 80  # a share of Shamir's field (2^521 − 1) is at most 66 bytes


@dataclass(frozen=True)
class SecAggView:
    """What the device is told: the phase and what its next stage needs."""

    phase: str
    accepted: bool = False
    reason: str = ""
    params: SecureParams | None = None
    roster: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    inbox: list[tuple[str, bytes]] = field(default_factory=list)
    intersections: dict[str, np.ndarray] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deadline_ms: int = 0


def usable_key(public: bytes) -> bool:
    """An X25519 public key that yields a shared secret (not a low-order point, which would make
    every honest peer's agreement fail and so let one device abort the round)."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return False
    return True


def held_bytes(ids: np.ndarray) -> bytes:
    return np.asarray(ids, "<i8").tobytes()


def held_ids(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, "<i8").astype(np.int64)


class SecureAggregationService:
    def __init__(self, auth: DeviceAuth, secagg: SecAggState, fl: FederatedState) -> None:
        self.auth, self.secagg, self.fl = auth, secagg, fl

    def round_params(self, round_id: str) -> SecureParams | None:
        """The round's parameters when it runs secure aggregation, else None."""
        phase = self._phase(round_id)
        return None if phase is None else SecureParams.from_proto(_params(phase))

    def record_pull(self, device_id: str, round_id: str, ids: np.ndarray) -> None:
        """The id set a selected device pulled: its masked input covers exactly these rows. The
        first pull counts; pulling a different set later in the round is refused."""
        if len(np.unique(ids)) != len(ids):
            raise InvalidArgument("item_ids of a secure round's pull must be unique")
        try:
            outcome = self.secagg.put(round_id, "held", device_id, held_bytes(np.sort(ids)))
        except StoreUnavailable as exc:
            raise Unavailable("federated state unavailable; retry later") from exc
        if outcome == "conflict":
            raise InvalidArgument("this device already pulled another id set in this round")
        if outcome == "closed":
            raise InvalidArgument("the round's key phase is over: too late to join it")

    def handle(
        self, device_id: str, round_id: str, stage: str, payload: bytes, token: str | None
    ) -> SecAggView:
        """Store the device's `stage` message (its protobuf bytes; stage '' = a poll), then
        answer the phase and what the device needs for its next stage."""
        self.auth.verify(device_id, token)
        phase = self._phase(round_id)
        if phase is None:
            raise InvalidArgument(f"round {round_id!r} runs no secure aggregation")
        accepted, reason = False, ""
        if stage:
            accepted, reason = self._take(phase, device_id, stage, payload)
            phase = self._phase(round_id) or phase
        return self._view(phase, device_id, accepted, reason)

    # --- stages -------------------------------------------------------------------------------
    def _take(
        self, phase: SecAggPhase, device: str, stage: str, payload: bytes
    ) -> tuple[bool, str]:
        params = _params(phase)
        try:
            admitted = self._admitted(phase, stage)
            if device not in admitted:
                return False, f"not in this round's {stage} set"
            self._check(phase, params, device, stage, payload)
            outcome = self.secagg.put(phase.round_id, stage, device, payload)
        except StoreUnavailable as exc:
            raise Unavailable("federated state unavailable; not stored, retry") from exc
        if outcome == "conflict":
            raise InvalidArgument(f"another {stage} message of this device is already stored")
        return outcome in ("accepted", "duplicate"), outcome

    def _admitted(self, phase: SecAggPhase, stage: str) -> set[str]:
        if stage == "keys":
            current = self.fl.current_round()
            if current is None or current.round_id != phase.round_id:
                return set()
            return set(current.selected)
        return set(
            {"shares": phase.roster, "masked": phase.senders, "unmask": phase.survivors}[stage]
        )

    def _check(
        self, phase: SecAggPhase, params: pb.SecAggParams, device: str, stage: str, payload: bytes
    ) -> None:
        """The push rules a masked round can check; anything else is INVALID_ARGUMENT."""
        if stage == "keys":
            keys = _parse(pb.SecAggKeys, payload)
            if len(keys.c_pk) != KEY_BYTES or len(keys.s_pk) != KEY_BYTES:
                raise InvalidArgument("c_pk and s_pk must be 32-byte X25519 public keys")
            if keys.c_pk == keys.s_pk:
                raise InvalidArgument("c_pk and s_pk must differ")
            if not (usable_key(keys.c_pk) and usable_key(keys.s_pk)):
                raise InvalidArgument("a public key is a low-order point: no shared secret")
            if self.secagg.get(phase.round_id, "held", device) is None:
                raise InvalidArgument("pull the round's rows before advertising keys")
        elif stage == "shares":
            shares = _parse(pb.SecAggShares, payload)
            peers = [s.peer for s in shares.shares]
            if sorted(peers) != sorted(set(phase.roster) - {device}):
                raise InvalidArgument("one share for every other roster member, no more")
            if any(len(s.ciphertext) != CIPHERTEXT_BYTES for s in shares.shares):
                raise InvalidArgument(f"a share message must be {CIPHERTEXT_BYTES} bytes")
        elif stage == "masked":
            m = _parse(pb.SecAggMasked, payload)
            held = self.secagg.get(phase.round_id, "held", device)
            rows = 0 if held is None else len(held) // 8
            if m.base_version != params.base_version:
                raise InvalidArgument(f"trained on version {m.base_version}, the round's is "
                                      f"{params.base_version}")  # fmt: skip
            if m.rows != rows or m.cols != params.row_width:
                raise InvalidArgument(f"masked rows must be {rows} x {params.row_width}")
            if len(m.row_data) != 4 * rows * params.row_width:
                raise InvalidArgument("row_data must hold 4 * rows * cols bytes")
            if len(m.dense_data) != 4 * params.dense_len:
                raise InvalidArgument(f"dense_data must hold 4 * {params.dense_len} bytes")
        elif stage == "unmask":
            u = _parse(pb.SecAggUnmask, payload)
            dropped = set(phase.senders) - set(phase.survivors)
            if set(u.s_shares) != dropped or set(u.b_shares) != set(phase.survivors):
                raise InvalidArgument("shares for exactly the dropped (s) and survivors (b)")
            values = [*u.s_shares.values(), *u.b_shares.values()]
            if any(len(v) > MAX_SHARE or int.from_bytes(v, "big") >= PRIME for v in values):
                raise InvalidArgument("a share is not an element of the sharing field")
        else:
            raise InvalidArgument(f"unknown stage {stage!r}")

    # --- answers ------------------------------------------------------------------------------
    def _view(self, phase: SecAggPhase, device: str, accepted: bool, reason: str) -> SecAggView:
        params = SecureParams.from_proto(_params(phase))
        base = SecAggView(
            phase.phase, accepted, reason or phase.reason, params, deadline_ms=phase.deadline_ms
        )
        try:
            if phase.phase == "shares" and device in phase.roster:
                keys = self.secagg.board(phase.round_id, "keys")
                roster = []
                for d in phase.roster:
                    if d not in keys:  # the boards are gone: the round is ending
                        return base
                    k = _parse(pb.SecAggKeys, keys[d])
                    roster.append((d, k.c_pk, k.s_pk))
                return _with(base, roster=roster)
            if phase.phase == "masked" and device in phase.senders:
                raw = self.secagg.get(phase.round_id, "inbox", device)
                mail = _parse(pb.SecAggResponse, raw or b"")
                return _with(
                    base, inbox=[(s.peer, s.ciphertext) for s in mail.inbox],
                    intersections={
                        i.peer: np.asarray(i.item_ids, np.int64) for i in mail.intersections
                    },
                )  # fmt: skip
            if phase.phase == "unmask" and device in phase.survivors:
                dropped = sorted(set(phase.senders) - set(phase.survivors))
                return _with(base, survivors=list(phase.survivors), dropped=dropped)
        except StoreUnavailable as exc:
            raise Unavailable("federated state unavailable; retry later") from exc
        return base

    def _phase(self, round_id: str) -> SecAggPhase | None:
        if not round_id:
            return None
        try:
            return self.secagg.phase(round_id)
        except StoreUnavailable as exc:
            raise Unavailable("federated state unavailable; retry later") from exc


def _params(phase: SecAggPhase) -> pb.SecAggParams:
    return pb.SecAggParams.FromString(phase.params)


def _parse(cls: type[M], payload: bytes) -> M:
    try:
        return cls.FromString(payload)
    except Exception:  # DecodeError: a malformed message is the sender's error
        raise InvalidArgument(f"malformed {cls.__name__}") from None


def _with(view: SecAggView, **changes: object) -> SecAggView:
    return replace(view, **changes)  # type: ignore[arg-type]
