"""The server's side of a secure-aggregation round (Bonawitz et al., CCS 2017): route, unmask.

A pure state machine over the messages (see protocol.py); it keeps no secret and contacts no
device. The caller moves it on stage by stage; a fresh server fed the same stored messages in
the same order reaches the same state, so a restarted aggregator can replay a round.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    CIPHERTEXT_BYTES,
    check_roster,
    check_row_ids,
    check_threshold,
    check_uint32,
    mask_info,
    pair_sign,
)


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """The unmasked sums: per row of ∪ P_u over the survivors, and the dense segment.

    `holders[k]` = how many summed inputs covered row k (the quantiser's offset count for it);
    every survivor covers the dense segment. `dropped` = roster devices whose input is not in
    the sum."""

    row_ids: np.ndarray  # (n,) int64, sorted
    row_sums: np.ndarray  # (n, row_width) uint32
    dense: np.ndarray  # (dense_len,) uint32
    holders: np.ndarray  # (n,) int64
    survivors: list[str]
    dropped: list[str]

    @property
    def rows(self) -> np.ndarray:
        return self.row_sums


class SecAggServer:
    """U1 (adverts) → U2 (shared keys) → U3 (masked inputs) → U4 (unmask answers) → the sum.

    `held[u]` is P_u, the sorted row ids device u pulled. Every `collect_*` / `route_shares` /
    `unmask` validates the whole batch before changing anything: InvalidMessage names the
    offending device and leaves the server as it was; RoundAborted (too few devices) ends it.
    """

    def __init__(self, params: SecAggParams, held: dict[str, np.ndarray]) -> None:
        self.params = params
        self.held = {d: check_row_ids(ids, f"held rows of {d}") for d, ids in held.items()}
        self.stage = "adverts"
        self.roster: dict[str, KeyAdvert] = {}  # U1, sorted by id
        self.x: dict[str, int] = {}  # Shamir x coordinate: 1-based index in U1
        self.u2: list[str] = []
        self.u3: dict[str, MaskedInput] = {}
        self._shared: dict[tuple[str, str], np.ndarray] = {}

    def collect_adverts(self, adverts: list[KeyAdvert]) -> list[KeyAdvert]:
        """U1: the roster every device receives, sorted by device id."""
        self._expect("adverts")
        roster = check_roster(adverts)
        strangers = sorted(set(roster) - set(self.held))
        if strangers:
            raise InvalidMessage(f"adverts from devices outside the cohort: {strangers[:5]}")
        check_threshold(self.params.threshold, len(roster))
        self.roster, self.x = roster, {d: k + 1 for k, d in enumerate(roster)}
        self.stage = "shares"
        return list(roster.values())

    def route_shares(self, shares: list[EncryptedShare]) -> dict[str, list[EncryptedShare]]:
        """U2 = the senders that sent a share to every other U1 member; each U2 member's inbox
        (the shares from the other U2 members, by sender)."""
        self._expect("shares")
        seen: dict[str, set[str]] = {}
        for e in shares:
            if e.sender not in self.roster or e.receiver not in self.roster:
                raise InvalidMessage(f"share {e.sender} → {e.receiver}: outside the roster")
            if e.sender == e.receiver or e.receiver in seen.get(e.sender, set()):
                raise InvalidMessage(f"share {e.sender} → {e.receiver}: to itself or twice")
            if len(e.ciphertext) != CIPHERTEXT_BYTES:
                raise InvalidMessage(f"share {e.sender} → {e.receiver}: wrong ciphertext length")
            seen.setdefault(e.sender, set()).add(e.receiver)
        u2 = [d for d in self.roster if seen.get(d, set()) == set(self.roster) - {d}]
        if len(u2) < self.params.threshold:
            raise RoundAborted(f"{len(u2)} devices shared keys, below t = {self.params.threshold}")
        members = set(u2)
        inbox: dict[str, list[EncryptedShare]] = {d: [] for d in u2}
        for e in sorted(shares, key=lambda e: (e.receiver, e.sender)):
            if e.sender in members and e.receiver in members:
                inbox[e.receiver].append(e)
        self.u2, self.stage = u2, "masked"
        return inbox

    def intersections_for(self, device_id: str) -> dict[str, np.ndarray]:
        """What the server sends u with its inbox: I_uv = P_u ∩ P_v for every other v in U2."""
        if self.stage not in ("masked", "unmask", "done") or device_id not in self.u2:
            raise InvalidMessage(f"{device_id} is not in U2 of this round")
        return {v: self._intersection(device_id, v) for v in self.u2 if v != device_id}

    def collect_masked(self, inputs: list[MaskedInput]) -> list[str]:
        """U3: the U2 devices whose masked input has the shape of their pulled rows."""
        self._expect("masked")
        p, members, got = self.params, set(self.u2), {}
        for m in inputs:
            if m.device_id not in members or m.device_id in got:
                raise InvalidMessage(f"masked input from {m.device_id}: not in U2, or twice")
            check_uint32(m.rows, (len(self.held[m.device_id]), p.row_width), f"{m.device_id} rows")
            check_uint32(m.dense, (p.dense_len,), f"{m.device_id} dense")
            got[m.device_id] = m
        if len(got) < p.threshold:
            raise RoundAborted(f"{len(got)} masked inputs, below t = {p.threshold}")
        self.u3, self.stage = dict(sorted(got.items())), "unmask"
        return list(self.u3)

    def unmask(self, responses: list[UnmaskShares]) -> SecAggResult:
        """U4 ≥ t answers: rebuild b of every U3 device and s_sk of every U2 \\ U3 device,
        remove the self masks and the pairwise masks the dropped devices left, return the sum."""
        self._expect("unmask")
        answers = self._check_answers(responses)
        chosen = sorted(answers, key=self.x.__getitem__)[: self.params.threshold]
        lagrange = shamir.LagrangeAtZero([self.x[d] for d in chosen])
        seeds = {v: lagrange.combine([answers[d].b_shares[v] for d in chosen]) for v in self.u3}
        dropped = [v for v in self.u2 if v not in self.u3]
        mask_keys = {}
        for v in dropped:
            raw = lagrange.combine([answers[d].s_shares[v] for d in chosen])
            sk = keys.private_from_bytes(raw)
            if keys.public_bytes(sk) != self.roster[v].s_pk:
                raise RoundAborted(f"the shares of {v}'s mask key do not match its advert")
            mask_keys[v] = sk
        result = self._sum(seeds, mask_keys)
        self.stage = "done"
        return result

    # --- helpers ----------------------------------------------------------------------------
    def _check_answers(self, responses: list[UnmaskShares]) -> dict[str, UnmaskShares]:
        want_b, want_s = set(self.u3), {v for v in self.u2 if v not in self.u3}
        answers: dict[str, UnmaskShares] = {}
        for r in responses:
            if r.device_id not in self.u3 or r.device_id in answers:
                raise InvalidMessage(f"unmask answer from {r.device_id}: not in U3, or twice")
            if set(r.b_shares) != want_b or set(r.s_shares) != want_s:
                raise InvalidMessage(f"unmask answer from {r.device_id}: wrong devices")
            values = [*r.b_shares.values(), *r.s_shares.values()]
            if any(not (isinstance(y, int) and 0 <= y < shamir.PRIME) for y in values):
                raise InvalidMessage(f"unmask answer from {r.device_id}: a share outside the field")
            answers[r.device_id] = r
        if len(answers) < self.params.threshold:
            raise RoundAborted(f"{len(answers)} unmask answers, below t = {self.params.threshold}")
        return answers

    def _sum(self, seeds: dict[str, bytes], mask_keys: dict[str, X25519PrivateKey]) -> SecAggResult:
        p = self.params
        row_ids = np.unique(np.concatenate([self.held[u] for u in self.u3]))
        sums = np.zeros((len(row_ids), p.row_width), np.uint32)
        dense = np.zeros(p.dense_len, np.uint32)
        holders = np.zeros(len(row_ids), np.int64)
        for u, m in self.u3.items():
            pos = np.searchsorted(row_ids, self.held[u])
            length = masks.mask_length(len(pos), p.row_width, p.dense_len)
            b_rows, b_dense = masks.as_segments(
                masks.self_mask(seeds[u], length), len(pos), p.row_width
            )
            sums[pos] += m.rows - b_rows
            dense += m.dense - b_dense
            holders[pos] += 1
        info = mask_info(p.round_id)
        for v, sk in mask_keys.items():
            for u in self.u3:
                shared = self._intersection(u, v)
                seed = keys.agree(sk, self.roster[u].s_pk, info)
                length = masks.mask_length(len(shared), p.row_width, p.dense_len)
                pr, pd = masks.as_segments(masks.pair_mask(seed, length), len(shared), p.row_width)
                pos = np.searchsorted(row_ids, shared)
                if pair_sign(u, v) > 0:  # u added +PRG(s_uv): take it off
                    sums[pos] -= pr
                    dense -= pd
                else:
                    sums[pos] += pr
                    dense += pd
        dropped = [d for d in self.roster if d not in self.u3]
        return SecAggResult(row_ids, sums, dense, holders, list(self.u3), dropped)

    def _intersection(self, u: str, v: str) -> np.ndarray:
        pair = (u, v) if u < v else (v, u)
        if pair not in self._shared:
            self._shared[pair] = np.intersect1d(self.held[u], self.held[v], assume_unique=True)
        return self._shared[pair]

    def _expect(self, stage: str) -> None:
        if self.stage != stage:
            raise WrongStage(f"{stage} called while the round is at {self.stage}")
