"""`python -m cloud_service.federated.aggregator`: runs rounds and applies them, from the stream.

One aggregator is active at a time (a lease in the federated state); a standby takes over when
the lease lapses and claims the pending entries of the one it replaces, so a SIGKILL at any
moment loses no acknowledged update: an update leaves the stream only in the same atomic step
(a MULTI/EXEC on Redis) that applies or abandons its round. The loop sees only `FederatedState`.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field, replace

import numpy as np

from cloud_service.federated import contribution
from cloud_service.federated.aggregate import fedlaavg_merge, most_outdated_first
from cloud_service.federated.contribution import ContributionRule
from cloud_service.federated.defences import Defences, aggregate, is_finite
from cloud_service.federated.rounds import RoundConfig, select_devices, staleness_weight
from cloud_service.federated.secure_rounds import SecureRounds
from cloud_service.store.base import StoreUnavailable
from cloud_service.store.federated_redis import FederatedStore
from cloud_service.store.federated_state import (
    FederatedState,
    NonFiniteModel,
    RoundContributions,
    RoundInfo,
    StoredPush,
)
from tandem_core.federated import update as update_codec
from tandem_core.federated.update import InvalidUpdate, ModelUpdate

log = logging.getLogger("aggregator")
GROUP = "aggregators"


@dataclass(frozen=True)
class Memory:
    """A round's input under FedLaAvg, and what the state must remember and forget with it."""

    used: list[ModelUpdate]
    remember: dict[str, bytes]
    forget: list[str]


@dataclass
class Aggregator:
    store: FederatedState
    cfg: RoundConfig
    dim: int
    defences: Defences
    name: str
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng())
    lease_ms: int = 5000
    buffer: dict[str, ModelUpdate] = field(default_factory=dict)  # entry id -> push, decoded
    claimed: bool = False
    # FedLaAvg's memory: each device's latest update and the version it was applied at. The
    # state holds it (written with each round); this is its copy, read again on every claim,
    # so a standby or a restarted aggregator continues it.
    latest: dict[str, ModelUpdate] = field(default_factory=dict)
    last_round: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    contribution: ContributionRule = field(default_factory=ContributionRule)
    no_signal_logged: bool = False
    # rounds run secure aggregation when set (cloud_service/federated/secure_rounds.py)
    secure: SecureRounds | None = None

    def hold_lease(self) -> bool:
        return self.store.hold_lease(self.name, self.lease_ms)

    def claim(self) -> None:
        """Take over every pending entry (ours after a restart, or a dead leader's)."""
        self.store.ensure_group(GROUP)
        self.store.claim_pending(GROUP, self.name)
        self.take(self.store.read(GROUP, self.name, pending=True, block_ms=0))
        if self.defences.algorithm == "fedlaavg":
            self.load_latest()
        self.claimed = True

    def load_latest(self) -> None:
        self.latest, self.last_round = {}, {}
        for device, (at, payload) in self.store.latest_updates().items():
            try:
                self.latest[device] = update_codec.decode(payload)
            except InvalidUpdate:
                log.warning("remembered update of %s undecodable; dropped", device)
                continue
            self.last_round[device] = at

    def take(self, entries: list[StoredPush]) -> None:
        current = self.store.current_round()
        open_id = current.round_id if current is not None and current.state == "open" else None
        stray = []
        for entry in entries:
            if entry.round_id == open_id:
                try:  # the one decode of a stored push (the service checked it before storing)
                    self.buffer[entry.entry_id] = update_codec.decode(entry.payload)
                except InvalidUpdate:
                    log.warning("entry %s undecodable; dropped", entry.entry_id)
                    stray.append(entry.entry_id)
            else:
                stray.append(entry.entry_id)
        self.store.ack(GROUP, stray)

    def open_round(self) -> RoundInfo | None:
        devices = self.store.devices()
        if self.defences.algorithm == "fedlaavg":
            n = math.ceil(self.cfg.devices_per_round * (1 + self.cfg.over_select))
            selected = most_outdated_first(devices, self.last_round, n)
        else:
            selected = select_devices(devices, self.cfg, self.rng)
        if not selected:
            return None
        now_ms = int(time.time() * 1000)
        deadline = (
            self.secure.round_deadline_ms(now_ms) if self.secure is not None
            else int(now_ms + self.cfg.duration_s * 1000)
        )  # fmt: skip
        info = RoundInfo(
            "r-" + uuid.uuid4().hex[:10], "open", self.store.version(), deadline,
            self.cfg.quorum, frozenset(selected),
        )  # fmt: skip
        if self.secure is not None:  # its phases first: a selected device finds them at once
            self.secure.open(info)
        self.store.open_round(info)
        self.buffer.clear()
        log.info(
            "round %s opened: %d devices, quorum %d", info.round_id, len(selected), info.quorum
        )
        return info

    def finish(self, rnd: RoundInfo) -> str:
        pushes = list(self.buffer.items())
        version = self.store.version()
        updates = []
        for _, p in pushes:  # one per device: the store's push admits no second
            w = staleness_weight(version, p.base_version, self.cfg)
            if w is None:
                continue
            updates.append(replace(
                p, row_deltas=p.row_deltas * w,
                dense_deltas={n: d * w for n, d in p.dense_deltas.items()},
            ))  # fmt: skip
        entry_ids = [e for e, _ in pushes]
        if len({u.device_id for u in updates}) >= rnd.quorum:
            # scored (and the lowest left out) only once the quorum is reached on every push
            record, updates = self._contributions(rnd, version, updates)
            fedla = self.defences.algorithm == "fedlaavg"
            left_out = set(record.excluded) if record is not None else set()
            memory = self._memory(version, updates, left_out) if fedla else Memory(updates, {}, [])
            ids, delta, dense = aggregate(memory.used, self.dim, self.defences)
            state = self._apply(rnd, entry_ids, (ids, delta, dense), memory)
            if state == "applied":
                self.rounds += 1
                if fedla:
                    self.latest = {u.device_id: u for u in memory.used}
                    self.last_round = {
                        d: (version + 1 if d in memory.remember else self.last_round[d])
                        for d in self.latest
                    }
            self._record(record, state)
        else:
            self.store.finish_round(GROUP, rnd.round_id, entry_ids, "aborted")
            state = "aborted"
        log.info("round %s %s with %d updates", rnd.round_id, state, len(updates))
        self.buffer.clear()
        return state

    def _contributions(
        self, rnd: RoundInfo, version: int, updates: list[ModelUpdate]
    ) -> tuple[RoundContributions | None, list[ModelUpdate]]:
        """Each update's score on the stored validation signal nearest `version`, and the
        updates kept once the rule's lowest share is left out. No (usable) signal: no scores,
        every update kept."""
        try:  # advisory: nothing about the signal may stop a round from being applied
            found = self.store.get_signal(version)
            if found is None:
                if not self.no_signal_logged:
                    log.info("no validation signal stored: contributions not scored")
                    self.no_signal_logged = True
                return None, updates
            signal = contribution.decode_signal(found[1])
            s = contribution.scores(updates, signal, self.contribution.mode)
        except Exception as exc:  # a corrupt or foreign signal, a store blip
            log.warning("validation signal unusable, round scored by nothing: %r", exc)
            return None, updates
        self.no_signal_logged = False
        keep = rnd.quorum
        drop = set(contribution.lowest(s, self.contribution.exclude_share, keep).tolist())
        record = RoundContributions(
            rnd.round_id, "open", version, found[0], self.contribution.mode,
            {u.device_id: float(x) for u, x in zip(updates, s, strict=True)},
            tuple(updates[k].device_id for k in sorted(drop)), int(time.time() * 1000),
        )  # fmt: skip
        if drop:
            log.info("round %s: left out %s (lowest contribution)", rnd.round_id, record.excluded)
        return record, [u for k, u in enumerate(updates) if k not in drop]

    def _record(self, record: RoundContributions | None, state: str) -> None:
        """Keep the round's scores; Redis failing here loses the record only (the round itself
        was applied or abandoned atomically before)."""
        if record is None:
            return
        try:
            self.store.record_contributions(replace(record, state=state))
        except StoreUnavailable:
            log.warning("round %s: contribution scores not recorded (store down)", record.round_id)

    def _memory(self, version: int, fresh: list[ModelUpdate], left_out: set[str]) -> Memory:
        """FedLaAvg's set for this round: the fresh updates and every remembered one applied
        fewer than `latest_max_age` rounds ago (older ones are forgotten: a device away that
        long would otherwise pull the model back towards where it was). A device whose update
        was left out for a low contribution is forgotten too (its older update is no better)."""
        kept = {
            d: u for d, u in self.latest.items()
            if version - self.last_round.get(d, version) < self.cfg.latest_max_age
            and d not in left_out
        }  # fmt: skip
        merged = fedlaavg_merge(kept, fresh)
        remember = {u.device_id: update_codec.encode(u) for u in fresh}
        forget = sorted(d for d in self.latest if d not in merged)
        return Memory(list(merged.values()), remember, forget)

    def _apply(
        self, rnd: RoundInfo, entry_ids: list[str],
        result: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]], memory: Memory,
    ) -> str:  # fmt: skip
        """Apply the aggregate, or abandon the round (model unchanged bit for bit) when it, or
        the model it would make, is not finite."""
        ids, delta, dense = result
        if is_finite(delta, dense):
            try:
                self.store.finish_round(
                    GROUP, rnd.round_id, entry_ids, "applied", ids, delta, dense,
                    remember=memory.remember, forget=memory.forget,
                )  # fmt: skip
                return "applied"
            except NonFiniteModel:
                pass
        log.warning("round %s: the aggregate is not finite; abandoned", rnd.round_id)
        self.store.finish_round(GROUP, rnd.round_id, entry_ids, "aborted")
        return "aborted"

    def step(self, block_ms: int = 200) -> str | None:
        """One loop turn; returns the state a round ended in, if one ended."""
        if not self.hold_lease():
            self.claimed = False
            time.sleep(block_ms / 1000)
            return None
        if not self.claimed:
            self.claim()
        rnd = self.store.current_round()
        if rnd is None or rnd.state != "open":
            if self.open_round() is None:
                time.sleep(block_ms / 1000)
            return None
        if self.secure is not None:
            return self._secure_step(rnd, block_ms)
        self.take(self.store.read(GROUP, self.name, pending=False, block_ms=block_ms))
        everyone = len({m.device_id for m in self.buffer.values()}) >= len(rnd.selected)
        if everyone or time.time() * 1000 >= rnd.deadline_ms:
            return self.finish(rnd)
        return None

    def _secure_step(self, rnd: RoundInfo, block_ms: int) -> str | None:
        assert self.secure is not None
        state = self.secure.step(rnd)
        if state is None:
            time.sleep(block_ms / 1000)
            return None
        if state == "applied":
            self.rounds += 1
        log.info("secure round %s %s", rnd.round_id, state)
        return state


def main() -> int:
    from cloud_service.build import (
        build_defences,
        build_round_config,
        build_secure_rounds,
        build_store,
        federated_dims,
    )
    from cloud_service.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = load_settings()
    store = build_store(s.store)
    fl = FederatedStore(store.client, s.store.key_prefix, store.breaker)
    dim, shapes = federated_dims(s.models.bundle_dir, fl)
    agg = Aggregator(
        store=fl, cfg=build_round_config(s.federated), dim=dim,
        defences=build_defences(s.federated), name=s.aggregator.name,
        contribution=ContributionRule(s.federated.contrib_mode, s.federated.exclude_low_contrib),
        secure=build_secure_rounds(s.federated, store, s.store.key_prefix, fl, dim, shapes),
    )  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("aggregator ready", flush=True)
    ports_file, heartbeat = s.transport.ports_file, s.aggregator.heartbeat
    if ports_file is not None:  # no ports; the file tells a supervisor it is up
        ports_file.write_text("{}")
    while not stop.is_set():
        if heartbeat is not None:
            heartbeat.touch()
        try:
            agg.step()
        except Exception:  # a Redis blip or a raced round: log, re-claim, go on
            log.exception("aggregator step failed; retrying")
            agg.claimed = False
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
