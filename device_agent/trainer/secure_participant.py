"""One device's turn in a secure-aggregation round: train once, then one protocol stage per call.

A secure round (the check-in's `secure` parameters) runs Bonawitz et al.'s four stages through
SecureAggregate: advertise keys (after pulling and training), share keys with the roster, send
the masked input, answer the unmasking. The phases move when the cohort has answered, so a
device cannot wait inside one call: each `take_part` sends what the current phase asks for and
returns; the trainer loop calls again on its next pass. The device's keys live only in this
object: an agent restart drops the device out of the round, which the protocol tolerates up to
its threshold. Plain rounds go to the plain `Participant`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device_agent.ports import CloudError, SecAggReply, SecAggStage, Submodel
from device_agent.trainer.examples import LocalExamples
from device_agent.trainer.participant import Participant, RoundOutcome
from tandem_core.federated import secure_update
from tandem_core.federated.secagg import RoundAborted, SecAggClient, SecAggParams
from tandem_core.federated.secure_update import SecureParams
from tandem_core.federated.update import ModelUpdate


@dataclass
class _Round:
    round_id: str
    client: SecAggClient
    update: ModelUpdate
    rows: np.ndarray  # the quantised input, over update.item_ids (sorted)
    dense: np.ndarray
    base_version: int
    sent: set[str] = field(default_factory=set)


@dataclass
class SecureParticipant:
    plain: Participant
    rounds: dict[str, _Round] = field(default_factory=dict)  # device -> its open secure round

    def take_part(
        self, device_id: str, examples: LocalExamples, decoy_pool: np.ndarray,
        done: dict[str, str] | None = None,
    ) -> RoundOutcome:  # fmt: skip
        """Check in, then the next stage of the device's round. Never raises on a cloud failure."""
        done = {} if done is None else done
        p = self.plain
        try:
            check_in = p.cloud.pull_submodel(device_id, "", [], p.timeout_s)
            ongoing = self.rounds.get(device_id)
            if ongoing is not None and ongoing.round_id != check_in.round_id:
                return self._conclude(device_id, ongoing, done)  # the round ended since
            if check_in.secure is None:
                outcome = p.train_and_push(device_id, examples, decoy_pool, check_in, done)
                if outcome.state in ("pushed", "already_pushed"):
                    done[device_id] = check_in.round_id
                return outcome
            if ongoing is None:
                return self._join(device_id, examples, decoy_pool, check_in, check_in.secure, done)
            reply = p.cloud.secure_aggregate(device_id, ongoing.round_id, None, p.timeout_s)
            return self._advance(device_id, ongoing, reply, done)
        except CloudError as exc:
            return RoundOutcome(device_id, exc.kind)  # the round is kept: the next pass retries
        except RoundAborted as exc:  # the client refused what the server sent
            self.rounds.pop(device_id, None)
            return RoundOutcome(device_id, f"secagg_refused:{exc}")

    def _join(
        self, device_id: str, ex: LocalExamples, pool: np.ndarray, check_in: Submodel,
        params: SecureParams, done: dict[str, str],
    ) -> RoundOutcome:  # fmt: skip
        p = self.plain
        rid = check_in.round_id
        if done.get(device_id) == rid:
            return RoundOutcome(device_id, "already_pushed")
        if not check_in.selected:
            return RoundOutcome(device_id, "not_selected")
        trained = p.train_update(device_id, ex, pool, check_in)
        if isinstance(trained, RoundOutcome):
            return trained
        rng = p.rng or np.random.default_rng()
        shapes = {n: tuple(a.shape) for n, a in trained.dense_deltas.items()}
        rows, dense = secure_update.encode(trained, shapes, params, rng)
        client = SecAggClient(
            device_id, SecAggParams(rid, params.threshold, params.row_width, params.dense_len), rng
        )
        # kept before the call: if its answer is lost, the next pass resends the same keys
        # (new keys would be refused, the first ones being stored)
        state = _Round(rid, client, trained, rows, dense, trained.base_version)
        self.rounds[device_id] = state
        reply = p.cloud.secure_aggregate(device_id, rid, client.advertise(), p.timeout_s)
        if not reply.accepted:
            self.rounds.pop(device_id, None)
            return RoundOutcome(device_id, f"refused:{reply.reason}")
        state.sent.add("keys")
        return RoundOutcome(device_id, "secagg:keys")

    def _conclude(self, device_id: str, r: _Round, done: dict[str, str]) -> RoundOutcome:
        """How a round that is no longer open ended for this device (its phase outlives it)."""
        try:
            reply = self.plain.cloud.secure_aggregate(
                device_id, r.round_id, None, self.plain.timeout_s
            )
        except CloudError:
            self.rounds.pop(device_id, None)
            return RoundOutcome(device_id, "secagg_dropped")
        outcome = self._advance(device_id, r, reply, done)
        if self.rounds.pop(device_id, None) is not None:  # it ended without this device
            return RoundOutcome(device_id, "secagg_dropped")
        return outcome

    def _advance(
        self, device_id: str, r: _Round, reply: SecAggReply, done: dict[str, str]
    ) -> RoundOutcome:
        """Send what the phase asks for, if not sent yet; report where the round is."""
        p = self.plain
        for _ in range(2):  # a stage's reply can already show the next phase
            stage: SecAggStage = None
            if reply.phase == "keys" and "keys" not in r.sent:  # the first answer was lost
                stage = r.client.advertise()
            elif reply.phase == "shares" and "shares" not in r.sent:
                stage = r.client.share_keys(reply.roster)
            elif reply.phase == "masked" and "masked" not in r.sent:
                stage = r.client.masked_input(
                    r.rows, r.update.item_ids, r.dense, reply.inbox, reply.intersections
                )
            elif reply.phase == "unmask" and "unmask" not in r.sent:
                stage = r.client.unmask(reply.survivors, reply.dropped)
            if stage is None:
                break
            reply = p.cloud.secure_aggregate(
                device_id,
                r.round_id,
                stage,
                p.timeout_s,
                r.base_version,
            )
            if not reply.accepted and reply.reason != "closed":
                self.rounds.pop(device_id, None)
                return RoundOutcome(device_id, f"refused:{reply.reason}")
            # sent, or too late for its phase (then the round goes on without this device)
            r.sent.add(_stage_name(stage) if reply.accepted else _stage_name(stage) + ":late")
        if reply.phase == "done":
            self.rounds.pop(device_id, None)
            if "masked" not in r.sent:  # the round ended without this device's input
                return RoundOutcome(device_id, "secagg_dropped")
            done[device_id] = r.round_id
            u = r.update
            return RoundOutcome(device_id, "pushed", len(u.item_ids), u.num_samples, u.epsilon)
        if reply.phase == "aborted":
            self.rounds.pop(device_id, None)
            return RoundOutcome(device_id, "secagg_aborted")
        return RoundOutcome(device_id, f"secagg:{reply.phase}")


def _stage_name(stage: SecAggStage) -> str:
    if isinstance(stage, list):
        return "shares"
    names = {"KeyAdvert": "keys", "MaskedInput": "masked", "UnmaskShares": "unmask"}
    return names.get(type(stage).__name__, "?")
