"""One device's turn in a federated round: pull a padded submodel, train, push for every row.

Protocol (cloud_service/federated): the device checks in with an empty pull; when the open round
selected it, it pulls its padded id set for that round, trains on its own impressions, and pushes
the deltas of exactly the pulled rows with a fresh update id. A push is retried with the same
update id until the cloud says it is stored (a duplicate is applied once). The cloud takes one
update per device per round: `already_pushed` (this device's update for the round is in under
another id, e.g. pushed before a restart lost `done`) ends the device's round like a push.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import numpy as np

from device_agent.ports import CloudError, CloudPort, Submodel
from device_agent.trainer.examples import LocalExamples
from device_agent.trainer.index_privacy import PrivacyConfig
from device_agent.trainer.local_model import LocalTraining, train_local
from tandem_core.federated.privacy import cover_pulled, epsilon
from tandem_core.federated.update import ModelUpdate


@dataclass(frozen=True)
class RoundOutcome:
    device_id: str
    state: str  # pushed | already_pushed | not_selected | no_round | too_few_examples
    #             | refused:<reason> | <error>
    rows: int = 0
    samples: int = 0
    epsilon: float = float("inf")


@dataclass
class Participant:
    cloud: CloudPort
    training: LocalTraining
    privacy: PrivacyConfig
    min_examples: int = 20
    timeout_s: float = 5.0
    push_attempts: int = 3
    rng: np.random.Generator | None = None

    def take_part(
        self, device_id: str, examples: LocalExamples, decoy_pool: np.ndarray,
        done: dict[str, str] | None = None,
    ) -> RoundOutcome:  # fmt: skip
        """Check in; if selected, pull, train and push. Never raises on a cloud failure.
        `done` maps a device to the last round it pushed in (updated here)."""
        done = {} if done is None else done
        try:
            outcome, round_id = self._round(device_id, examples, decoy_pool, done)
        except CloudError as exc:
            return RoundOutcome(device_id, exc.kind)
        if outcome.state in ("pushed", "already_pushed"):  # either way: not again this round
            done[device_id] = round_id
        return outcome

    def _round(
        self, device_id: str, ex: LocalExamples, decoy_pool: np.ndarray, done: dict[str, str]
    ) -> tuple[RoundOutcome, str]:
        check_in = self.cloud.pull_submodel(device_id, "", [], self.timeout_s)
        rid = check_in.round_id
        return self.train_and_push(device_id, ex, decoy_pool, check_in, done), rid

    def train_and_push(
        self, device_id: str, ex: LocalExamples, decoy_pool: np.ndarray, check_in: Submodel,
        done: dict[str, str],
    ) -> RoundOutcome:  # fmt: skip
        if not check_in.round_id:
            return RoundOutcome(device_id, "no_round")
        if done.get(device_id) == check_in.round_id:
            return RoundOutcome(device_id, "already_pushed")
        if not check_in.selected:
            return RoundOutcome(device_id, "not_selected")
        update = self.train_update(device_id, ex, decoy_pool, check_in)
        if isinstance(update, RoundOutcome):
            return update
        for attempt in range(self.push_attempts):
            try:
                accepted, reason = self.cloud.push_update(update, self.timeout_s)
                break
            except CloudError:
                if attempt == self.push_attempts - 1:
                    raise
        if not accepted and reason == "already_pushed":
            return RoundOutcome(device_id, "already_pushed")
        if not accepted:
            return RoundOutcome(device_id, f"refused:{reason}")
        return RoundOutcome(
            device_id, "pushed", len(update.item_ids), update.num_samples, update.epsilon
        )

    def train_update(
        self, device_id: str, ex: LocalExamples, decoy_pool: np.ndarray, check_in: Submodel
    ) -> ModelUpdate | RoundOutcome:
        """Pull the padded id set for the round, train on it, and the update over exactly the
        pulled rows (a push, or the input of a secure round); an outcome when there is none."""
        if len(ex) < self.min_examples:
            return RoundOutcome(device_id, "too_few_examples")
        rng = self.rng or np.random.default_rng()
        p, q = self.privacy.keep_prob, self.privacy.decoy_prob
        padded = self.privacy.pad(device_id, ex, decoy_pool)  # permanent RR (index_privacy.py)
        ids = padded.ids
        sub = self.cloud.pull_submodel(device_id, check_in.round_id, ids.tolist(), self.timeout_s)
        order = np.argsort(sub.item_ids, kind="stable")
        pulled, rows = sub.item_ids[order], sub.rows[order]
        result = train_local(
            pulled, rows, sub.dense, ex.category_of(pulled), ex.arrays(), self.training,
            seed=int(rng.integers(1 << 31)),
        )  # fmt: skip
        if result.num_samples == 0:
            return RoundOutcome(device_id, "too_few_examples")
        _, deltas, counts = cover_pulled(
            pulled, result.item_ids, result.row_deltas, result.row_counts
        )
        return replace(
            result, device_id=device_id, round_id=sub.round_id, update_id=uuid.uuid4().hex,
            base_version=sub.base_version, item_ids=pulled, row_deltas=deltas, row_counts=counts,
            epsilon=epsilon(p, q), keep_prob=p, decoy_prob=q, decoy_pool_size=padded.pool_size,
        )  # fmt: skip
