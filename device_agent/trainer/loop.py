"""The agent's background trainer: every interval, each device with data takes part in the round."""

from __future__ import annotations

import logging
import threading
from collections import Counter

import numpy as np

from device_agent.ports import CloudPort
from device_agent.trainer.examples import ExampleStore
from device_agent.trainer.local_model import LocalTraining
from device_agent.trainer.participant import Participant, PrivacyConfig, RoundOutcome
from device_agent.trainer.secure_participant import SecureParticipant

log = logging.getLogger(__name__)
SECURE_POLL_S = 1.0


class TrainerLoop:
    """Runs off the request path on its own thread (torch is imported here, never by serving)."""

    def __init__(
        self, store: ExampleStore, cloud: CloudPort, training: LocalTraining,
        privacy: PrivacyConfig, min_examples: int, interval_s: float, timeout_s: float = 5.0,
        seed: int | None = None,
    ) -> None:  # fmt: skip
        self.store, self.interval_s = store, interval_s
        # plain rounds push; secure-aggregation rounds take one protocol stage per pass
        self.participant = SecureParticipant(Participant(
            cloud, training, privacy, min_examples, timeout_s, rng=np.random.default_rng(seed)
        ))  # fmt: skip
        self.outcomes: Counter[str] = Counter()
        self.rounds_done: dict[str, str] = {}  # device → last round it pushed in
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fl-trainer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> list[RoundOutcome]:
        """One pass over the devices with enough data; a device pushes at most once a round."""
        out = []
        for device_id, ex in self.store.devices():
            if len(ex) < self.participant.plain.min_examples:
                continue
            outcome = self.participant.take_part(device_id, ex, ex.decoy_pool(), self.rounds_done)
            self.outcomes[outcome.state] += 1  # refusals keep their reason
            out.append(outcome)
        return out

    def next_wait_s(self) -> float:
        """The interval, or at most SECURE_POLL_S while a device is in a secure round: its
        phases close when the cohort has answered or at a deadline of a few seconds, so a
        device waiting a whole interval between stages would miss them."""
        return min(self.interval_s, SECURE_POLL_S) if self.participant.rounds else self.interval_s

    def _run(self) -> None:
        while not self._stop.wait(self.next_wait_s()):
            try:
                self.run_once()
            except Exception:  # training must never take the agent down
                log.exception("federated training pass failed")
