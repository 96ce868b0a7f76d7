"""The aggregator's side of a secure-aggregation round: phases moved on, masks removed, sum applied.

Bonawitz et al., CCS 2017, over the boards of `SecAggState`. A phase ends when every device it
admits has sent its message or at its deadline; fewer than the threshold t at any phase aborts
the round (the model unchanged). After unmasking the server holds only the cohort's sums of the
count-weighted deltas, counts, contributor indicators and dense deltas (tandem_core's
`secure_update` layout), which FedSubAvg needs and nothing per device; the boards are deleted
when the round ends. Every step replays the stored messages, so a restarted or standby
aggregator continues the round.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from cloud_service.services.secure_aggregation import held_ids
from cloud_service.store.federated_state import (
    FederatedState,
    NonFiniteModel,
    RoundInfo,
    RoundNotCurrent,
)
from cloud_service.store.secagg_state import SecAggPhase, SecAggState
from protos.tandem.v1 import tandem_pb2 as pb
from tandem_core.federated import secure_update
from tandem_core.federated.secagg import (
    EncryptedShare,
    KeyAdvert,
    MaskedInput,
    RoundAborted,
    SecAggParams,
    SecAggResult,
    SecAggServer,
    UnmaskShares,
)
from tandem_core.federated.secagg.keys import CryptoError
from tandem_core.federated.secure_update import SecureParams

log = logging.getLogger("aggregator")


@dataclass(frozen=True)
class SecureConfig:
    phase_s: float = 10.0  # each of the four phases waits at most this long
    row_clip: float = 16.0
    dense_clip: float = 64.0
    count_cap: int = 64
    sample_cap: int = 1000
    max_correction: float = math.inf
    min_contributors: int = 1
    min_contributor_share: float = 0.0


def threshold(selected: int, quorum: int) -> int:
    """t of the round: more than half the selected devices (so an honest-but-curious server
    never gets both secrets of one device, Bonawitz et al. §4) and at least the quorum."""
    return min(selected, max(quorum, selected // 2 + 1))


@dataclass
class SecureRounds:
    secagg: SecAggState
    fl: FederatedState
    cfg: SecureConfig
    dim: int
    shapes: dict[str, tuple[int, ...]]
    group: str = "aggregators"

    def open(self, info: RoundInfo) -> SecureParams:
        params = SecureParams(
            threshold(len(info.selected), info.quorum), self.dim + 2,
            secure_update.dense_length(self.shapes), self.cfg.row_clip, self.cfg.dense_clip,
            max(2, len(info.selected)), self.cfg.count_cap, self.cfg.sample_cap,
            info.base_version,
        )  # fmt: skip
        phase = SecAggPhase(
            info.round_id, "keys", _now_ms() + int(self.cfg.phase_s * 1000),
            params.to_proto().SerializeToString(),
        )  # fmt: skip
        self.secagg.start(phase, ttl_ms=int(self.cfg.phase_s * 1000 * 8))
        return params

    def round_deadline_ms(self, opened_ms: int) -> int:
        """The round's overall deadline: its four phases and some slack."""
        return opened_ms + int(self.cfg.phase_s * 1000 * 5)

    def step(self, rnd: RoundInfo) -> str | None:
        """Move the round on if its phase is complete or due; 'applied' / 'aborted' when it ends."""
        phase = self.secagg.phase(rnd.round_id)
        if phase is None:  # expired or never started: nothing to unmask
            return self._abort(rnd, SecAggPhase(rnd.round_id, "keys", 0, b""), "state lost")
        due = _now_ms() >= phase.deadline_ms
        handlers = {"keys": self._after_keys, "shares": self._after_shares,
                    "masked": self._after_masked, "unmask": self._after_unmask}  # fmt: skip
        if phase.phase == "applying":  # an aggregator stopped between claiming and applying
            return self._abort(rnd, phase, "interrupted while applying") if due else None
        if phase.phase not in handlers:
            return None
        try:
            return handlers[phase.phase](rnd, phase, due)
        except (RoundAborted, ValueError, KeyError, CryptoError) as exc:
            # deterministic on the stored messages: retrying would fail the same way every step
            return self._abort(rnd, phase, f"{phase.phase}: {exc!r}")

    # --- phases -----------------------------------------------------------------------------
    def _after_keys(self, rnd: RoundInfo, phase: SecAggPhase, due: bool) -> str | None:
        held = self.secagg.board(rnd.round_id, "held")
        keys = self.secagg.board(rnd.round_id, "keys")
        ready = sorted(d for d in keys if d in held and d in rnd.selected)
        ready = _unique_keys(ready, keys)
        if len(ready) < len(rnd.selected) and not due:
            return None
        server = self._server(phase, held)
        try:
            roster = server.collect_adverts([self._advert(d, keys[d]) for d in ready])
        except RoundAborted as exc:
            return self._abort(rnd, phase, f"keys: {exc}")
        names = tuple(a.device_id for a in roster)
        self._advance(phase, "shares", roster=names)
        return None

    def _after_shares(self, rnd: RoundInfo, phase: SecAggPhase, due: bool) -> str | None:
        board = self.secagg.board(rnd.round_id, "shares")
        if len([d for d in phase.roster if d in board]) < len(phase.roster) and not due:
            return None
        held = self.secagg.board(rnd.round_id, "held")
        server = self._replay_keys(phase, held)
        try:
            inboxes = server.route_shares(self._shares(board, phase.roster))
        except RoundAborted as exc:
            return self._abort(rnd, phase, f"shares: {exc}")
        senders = tuple(sorted(inboxes))
        mail = {}
        for device in senders:
            reply = pb.SecAggResponse(
                inbox=[pb.SecAggShare(peer=e.sender, ciphertext=e.ciphertext)
                       for e in inboxes[device]],
                intersections=[
                    pb.SecAggIntersection(peer=peer, item_ids=ids.tolist())
                    for peer, ids in sorted(server.intersections_for(device).items())
                ],
            )  # fmt: skip
            mail[device] = reply.SerializeToString()
        self.secagg.deliver(rnd.round_id, "inbox", mail)
        self._advance(phase, "masked", senders=senders)
        return None

    def _after_masked(self, rnd: RoundInfo, phase: SecAggPhase, due: bool) -> str | None:
        board = self.secagg.board(rnd.round_id, "masked")
        survivors = tuple(d for d in phase.senders if d in board)
        if len(survivors) < len(phase.senders) and not due:
            return None
        if len(survivors) < self._params(phase).threshold:
            return self._abort(rnd, phase, f"masked: {len(survivors)} inputs, below t")
        self._advance(phase, "unmask", survivors=survivors)
        return None

    def _after_unmask(self, rnd: RoundInfo, phase: SecAggPhase, due: bool) -> str | None:
        board = self.secagg.board(rnd.round_id, "unmask")
        if len([d for d in phase.survivors if d in board]) < len(phase.survivors) and not due:
            return None
        held = self.secagg.board(rnd.round_id, "held")
        server = self._replay_keys(phase, held)
        try:
            # only the senders the shares phase closed with: a share stored after it closed
            # must not make its sender look like one more device to unmask
            server.route_shares(self._shares(self.secagg.board(rnd.round_id, "shares"),
                                             phase.senders))  # fmt: skip
            masked = self.secagg.board(rnd.round_id, "masked")
            server.collect_masked([self._masked(d, masked[d]) for d in phase.survivors])
            result = server.unmask(
                [self._unmask(d, board[d]) for d in phase.survivors if d in board]
            )
        except RoundAborted as exc:
            return self._abort(rnd, phase, f"unmask: {exc}")
        # claim the round before applying it: a second aggregator (a lapsed lease) fails here
        applying = replace(phase, phase="applying",
                           deadline_ms=_now_ms() + int(self.cfg.phase_s * 1000))  # fmt: skip
        if not self.secagg.advance("unmask", applying):
            return None
        return self._apply(rnd, applying, result)

    # --- the sum -----------------------------------------------------------------------------
    def _apply(self, rnd: RoundInfo, phase: SecAggPhase, result: SecAggResult) -> str | None:
        params = SecureParams.from_proto(self._params(phase))
        total = secure_update.decode(
            result.row_ids, result.row_sums, result.dense, result.holders, self.shapes, params,
            len(result.survivors),
        )  # fmt: skip
        if not _in_range(total, result.holders, params):
            return self._abort(rnd, phase, "the unmasked sum is out of range (a forged share?)")
        floor = max(
            self.cfg.min_contributors,
            math.ceil(self.cfg.min_contributor_share * total.inputs),
        )
        row_ids, delta, dense = secure_update.fedsubavg_step(total, self.cfg.max_correction, floor)
        if not (np.isfinite(delta).all() and all(np.isfinite(d).all() for d in dense.values())):
            return self._abort(rnd, phase, "the aggregate is not finite")
        try:
            self.fl.finish_round(self.group, rnd.round_id, [], "applied", row_ids, delta, dense)
        except NonFiniteModel:
            return self._abort(rnd, phase, "the model would not be finite")
        except RoundNotCurrent:
            return None  # finished by another aggregator
        self._advance(phase, "done")
        self.secagg.drop(rnd.round_id)
        log.info(
            "secure round %s applied: %d inputs, %d rows", rnd.round_id, total.inputs, len(row_ids)
        )
        return "applied"

    def _abort(self, rnd: RoundInfo, phase: SecAggPhase, reason: str) -> str:
        with contextlib.suppress(RoundNotCurrent):  # already ended
            self.fl.finish_round(self.group, rnd.round_id, [], "aborted")
        if phase.params:
            self._advance(phase, "aborted", reason=reason)
        self.secagg.drop(rnd.round_id)
        log.warning("secure round %s aborted: %s", rnd.round_id, reason)
        return "aborted"

    # --- helpers ----------------------------------------------------------------------------
    def _advance(self, phase: SecAggPhase, to: str, **changes: object) -> None:
        end = to in ("done", "aborted")
        deadline = phase.deadline_ms if end else _now_ms() + int(self.cfg.phase_s * 1000)
        new = replace(phase, phase=to, deadline_ms=deadline, **changes)  # type: ignore[arg-type]
        ttl = int(self.cfg.phase_s * 1000 * 8) if end else 0
        if not self.secagg.advance(phase.phase, new, ttl):
            log.info("round %s: phase %s moved on by another aggregator", phase.round_id, to)

    def _params(self, phase: SecAggPhase) -> pb.SecAggParams:
        return pb.SecAggParams.FromString(phase.params)

    def _server(self, phase: SecAggPhase, held: dict[str, bytes]) -> SecAggServer:
        p = self._params(phase)
        params = SecAggParams(phase.round_id, p.threshold, p.row_width, p.dense_len)
        return SecAggServer(params, {d: held_ids(raw) for d, raw in held.items()})

    def _replay_keys(self, phase: SecAggPhase, held: dict[str, bytes]) -> SecAggServer:
        server = self._server(phase, held)
        keys = self.secagg.board(phase.round_id, "keys")
        server.collect_adverts([self._advert(d, keys[d]) for d in phase.roster])
        return server

    @staticmethod
    def _advert(device: str, raw: bytes) -> KeyAdvert:
        k = pb.SecAggKeys.FromString(raw)
        return KeyAdvert(device, k.c_pk, k.s_pk)

    @staticmethod
    def _shares(board: dict[str, bytes], roster: tuple[str, ...]) -> list[EncryptedShare]:
        out = []
        for sender in roster:
            if sender in board:
                for s in pb.SecAggShares.FromString(board[sender]).shares:
                    out.append(EncryptedShare(sender, s.peer, s.ciphertext))
        return out

    @staticmethod
    def _masked(device: str, raw: bytes) -> MaskedInput:
        m = pb.SecAggMasked.FromString(raw)
        rows = np.frombuffer(m.row_data, "<u4").astype(np.uint32).reshape(m.rows, m.cols)
        return MaskedInput(device, rows, np.frombuffer(m.dense_data, "<u4").astype(np.uint32))

    @staticmethod
    def _unmask(device: str, raw: bytes) -> UnmaskShares:
        u = pb.SecAggUnmask.FromString(raw)
        return UnmaskShares(
            device,
            {k: int.from_bytes(v, "big") for k, v in u.s_shares.items()},
            {k: int.from_bytes(v, "big") for k, v in u.b_shares.items()},
        )


def _in_range(total: secure_update.CohortSum, holders: np.ndarray, p: SecureParams) -> bool:
    """The integer parts of the sum within what honest inputs can add up to. A wrong mask
    removal (a forged share, a forged input's masks) leaves uniform garbage in Z_2^32, which
    fails this with overwhelming probability; a value forged *within* the bounds passes (the
    semi-honest protocol does not stop a device from lying about its own input)."""
    return bool(
        (total.counts <= holders * p.count_cap).all()
        and (total.contributors <= holders).all()
        and total.weight <= total.inputs * p.sample_cap
    )


def _unique_keys(devices: list[str], keys: dict[str, bytes]) -> list[str]:
    """The devices whose advertised keys no other device also advertised: a copied key (a
    device replaying another's) leaves both out, so it cannot abort the round for everyone."""
    seen: dict[bytes, int] = {}
    for d in devices:
        k = pb.SecAggKeys.FromString(keys[d])
        for key in (k.c_pk, k.s_pk):
            seen[key] = seen.get(key, 0) + 1
    out = []
    for d in devices:
        k = pb.SecAggKeys.FromString(keys[d])
        if seen[k.c_pk] == 1 and seen[k.s_pk] == 1:
            out.append(d)
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)
