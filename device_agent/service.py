"""The agent's domain: serve a page, decide whether to ask the cloud, record app events."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from device_agent import metrics
from device_agent.forwarder import EventForwarder
from device_agent.inference.interest_encoder import private_interest
from device_agent.inference.models import (
    InterestEncoderSlot,
    RerankerSlot,
    ShiftDetectorSlot,
    ValueModelSlot,
)
from device_agent.inference.reranker import OnnxReranker
from device_agent.policy.decision import Exploration, RequestPolicy
from device_agent.policy.features import request_features
from device_agent.policy.pacing import DualPacer
from device_agent.popular import PopularItems
from device_agent.ports import CloudError, CloudList, CloudPort, PrivateInterest, ReportedEvent
from device_agent.session.fill import Fill, top_up
from device_agent.session.registry import SessionRegistry
from device_agent.session.state import DeviceSession, PageDecision, Pool
from device_agent.trainer.examples import ExampleStore
from device_agent.trainer.index_privacy import PrivacyConfig
from protos.actions import NAMES, Action

log = logging.getLogger(__name__)
FROM_CLOUD = frozenset({"initial", "refill", "refreshed"})  # outcomes that serve a fresh list


class InvalidEvent(ValueError):
    """An app event that cannot be accepted; nothing was recorded."""


@dataclass(frozen=True)
class Decision:
    value: float
    threshold: float
    shift: float
    asked: bool
    outcome: str  # initial | refill | refreshed | kept | timeout | throttled | unavailable | error
    propensity: float = 1.0  # P(the action taken); < 1 only where the policy randomised
    features: tuple[float, ...] = ()  # what the value model saw (logged for training)


@dataclass(frozen=True)
class Page:
    items: Pool
    source: str  # cloud | local
    decision: Decision
    model_version: str
    fill: Fill = "pool"  # the worst source the page needed (session.fill)


@dataclass(frozen=True)
class AppEvent:
    item_id: int
    action: int  # a protos.actions.Action code
    timestamp_ms: int


class Handshake:
    """Counts steps whose pool rows and re-ranker disagree on the embedding version."""

    def __init__(self) -> None:
        self.mismatched_steps = 0
        self._lock = threading.Lock()
        self.cloud_version = self.reranker_version = ""  # the last versions compared

    def compatible(self, model_version: str, pool: Pool, count: bool) -> bool:
        """Unknown ("") on either side is trusted: models and lists from before the field."""
        if pool.embedding_version:
            self.cloud_version, self.reranker_version = pool.embedding_version, model_version
        ok = not (model_version and pool.embedding_version) or (
            model_version == pool.embedding_version
        )
        if not ok and count:
            with self._lock:
                self.mismatched_steps += 1
            metrics.HANDSHAKE_MISMATCH.inc()
        return ok

    def status(self) -> dict[str, object]:
        return {
            "mismatched_steps": self.mismatched_steps,
            "cloud_embedding_version": self.cloud_version,
            "reranker_embedding_version": self.reranker_version,
        }


def reported(events: Sequence[AppEvent], s: DeviceSession) -> list[ReportedEvent]:
    """The events as the cloud logs them: an item on the last page carries its slot and the
    decision that served the page."""
    slots = {item: pos for pos, (item, _) in enumerate(s.page)}
    d = s.page_decision
    out = []
    for e in events:
        pos = slots.get(e.item_id)
        if pos is None or d is None:
            out.append(ReportedEvent(e.item_id, e.action, e.timestamp_ms))
            continue
        out.append(ReportedEvent(
            e.item_id, e.action, e.timestamp_ms, pos, d.request_id, d.source, d.asked_cloud,
            d.value, d.threshold, d.propensity, d.features, d.step,
        ))  # fmt: skip
    return out


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q)).astype(np.float32)


class AgentService:
    def __init__(
        self,
        sessions: SessionRegistry,
        cloud: CloudPort,
        reranker: RerankerSlot,
        value_model: ValueModelSlot | None,
        pool_size: int,
        max_k: int,
        policy: str = "value",
        pacer: DualPacer | None = None,
        examples: ExampleStore | None = None,
        forwarder: EventForwarder | None = None,
        exploration: Exploration | None = None,
        seed: int | None = None,
        shift_detector: ShiftDetectorSlot | None = None,
        interest_encoder: InterestEncoderSlot | None = None,
        private_recommend: bool = False,
        popular: PopularItems | None = None,
    ) -> None:
        self.sessions, self.cloud, self.reranker = sessions, cloud, reranker
        self.value_model, self.pool_size, self.max_k = value_model, pool_size, max_k
        self.policy = policy
        self.pacer = pacer or DualPacer(0.1)
        self.request_policy = RequestPolicy(self.pacer, exploration)
        self._initial_lam = self.pacer.lam
        self._priced_for = "shift:"  # what λ was learned for: a value model version or "shift:"
        self._rng = np.random.default_rng(seed)  # exploration draws (under the pacer lock)
        self._pacer_lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.last_list: Pool = Pool.empty()  # any device's latest cloud list: the first top-up
        self.popular = (
            popular if popular is not None else PopularItems()
        )  # the fleet's popular items: the second top-up
        self.fills: Counter[Fill] = Counter()  # pages by how they were filled
        self._fills_lock = threading.Lock()
        self.examples = examples  # the devices' own training data, when federated training is on
        self.training: Counter[str] | None = None  # the trainer's round outcomes, when it runs
        self.index_privacy: PrivacyConfig | None = None  # the pulls' ε ledgers, when training
        self.forwarder = forwarder  # app events to the cloud's logs, when forwarding is on
        self.handshake = Handshake()
        self.shift_detector = shift_detector  # the learned detector, when the registry has one
        # the private Recommend: the encoder's pseudo-history instead of the event window
        self.private_recommend, self.interest_encoder = private_recommend, interest_encoder
        self.private_carried: Counter[str] = Counter()  # what the private requests carried

    def _value(self, s: DeviceSession) -> tuple[float, float, np.ndarray]:
        features = request_features(s.view)
        shift = self._shift(s, float(features[0]))
        # the slot's model is read once: a hot swap never changes it inside one decision
        model = self.value_model.current if self.value_model is not None else None
        if model is None:  # the rule decides on the shift: λ is in the detector's units
            detector = self.shift_detector.version if self.shift_detector is not None else ""
            self._reprice("shift:" + detector)
            return shift, shift, features
        self._reprice(self.value_model.version if self.value_model is not None else "")
        try:
            return model.value(features), shift, features
        except Exception:  # a model that cannot run never fails the app's page
            log.exception("value model failed; deciding on the shift score")
            metrics.MODEL_FAILURES.labels("value_model").inc()
            return shift, shift, features

    def _shift(self, s: DeviceSession, formula: float) -> float:
        """The learned detector's P(interest moved away from the pool) when one is installed
        (its prior: the device's own rate), else the formula. The value features keep the
        formula: the value model was trained on it."""
        detector = self.shift_detector.current if self.shift_detector is not None else None
        if detector is None:
            return formula
        if s.shift_prior is None:
            s.shift_prior = detector.new_prior()
        try:
            return detector.probability(s.view, s.shift_prior.rate())
        except Exception:  # a detector that cannot run never fails the app's page
            log.exception("shift detector failed; using the formula")
            metrics.MODEL_FAILURES.labels("shift_detector").inc()
            return formula

    def _reprice(self, version: str) -> None:
        """A new value model (or the fall back to the shift score) values requests in other
        units: λ learned for the old one starts again from its initial price."""
        if version == self._priced_for:
            return
        with self._pacer_lock:
            if version != self._priced_for:
                self._priced_for = version
                self.pacer.lam = self._initial_lam

    def _ask_cloud(self, s: DeviceSession) -> CloudList:
        exclude = sorted(set(s.shown))  # not the pool: its best unshown items may come back
        if self.private_recommend:  # no event window leaves the device
            private = self._private_interest(s)
            return self.cloud.recommend(s.device_id, self.pool_size, [], exclude, private=private)
        recent = list(s.behavior)
        return self.cloud.recommend(s.device_id, self.pool_size, recent, exclude)

    def _private_interest(self, s: DeviceSession) -> PrivateInterest:
        """The encoder's pseudo-history of the session's clicked rows; without a usable encoder
        (none installed, other embedding rows, or it raised) their mean row: the request stays
        private and the app's page is never failed."""
        version = s.pool.embedding_version
        encoder = self.interest_encoder.current if self.interest_encoder is not None else None
        carried = "encoder"
        if not s.clicked:
            carried, encoder = "no_clicks", None
        elif encoder is None:
            carried = "no_encoder"
        elif encoder.embedding_version and version and encoder.embedding_version != version:
            carried, encoder = "embedding_mismatch", None
        try:
            private = private_interest(list(s.clicked), encoder, version)
        except Exception:  # an encoder that cannot run falls back, never fails the page
            log.exception("interest encoder failed; sending the mean row instead")
            metrics.MODEL_FAILURES.labels("interest_encoder").inc()
            carried = "encoder_failed"
            private = private_interest(list(s.clicked), None, version)
        if carried not in self.private_carried and carried not in ("encoder", "no_clicks"):
            log.warning("private Recommend without the interest encoder (%s)", carried)
        self.private_carried[carried] += 1
        metrics.PRIVATE_REQUESTS.labels(carried).inc()
        return private

    def _decide(self, s: DeviceSession, k: int) -> Decision:
        """Ask the cloud when the session has no list yet (initial), when the pool cannot fill
        the page (refill: the feed must go on), or when the request's value clears λ."""
        value, shift, features = self._value(s)
        initial = not s.had_cloud_list
        refill = not initial and len(s.pool) < k
        with self._pacer_lock:
            u = float(self._rng.random())
        choice = self.request_policy.decide(value, s.allowance, u, forced=initial or refill)
        if self.policy != "value" and not choice.forced:  # the demo's AlwaysQ / NoQ references
            choice = replace(choice, ask=self.policy == "always", propensity=1.0)
        asked = choice.ask
        outcome, throttled = "kept", False
        if asked:
            try:
                reply = self._ask_cloud(s)
                if len(reply.item_ids):
                    pool = self._remember(reply)
                    s.set_pool(pool)
                    if self.examples is not None:
                        self.examples.get(s.device_id).note_list(pool.items, pool.categories)
                outcome = "initial" if initial else "refill" if refill else "refreshed"
            except CloudError as exc:
                outcome, throttled = exc.kind, exc.kind == "throttled"
            metrics.CLOUD_CALLS.labels(outcome).inc()
        if not initial:  # the first list is not a request; refills count against the budget
            with self._pacer_lock:
                self.request_policy.record(choice, s.allowance, throttled=throttled)
            s.cloud_requests += int(asked)
        return Decision(
            value, self.pacer.lam, shift, asked, outcome, choice.propensity,
            tuple(features.tolist()),
        )  # fmt: skip

    def recommend(self, device_id: str, k: int) -> Page:
        if not 1 <= k <= self.max_k:
            raise InvalidEvent(f"k must be between 1 and {self.max_k}")
        s = self.sessions.get(device_id)
        with s.lock:
            s.close_page()
            decision = self._decide(s, k)
            if len(s.pool) == 0 and len(self.last_list):
                # cold start with no cloud: what others got becomes the pool (its next ask is a
                # counted refill, not another free "initial" on every page)
                s.set_pool(self._fallback(s))
            model = self._model_for(s, count=True)
            # the pool's items in the re-ranker's order, then others' items when it runs dry
            page, fill = top_up(s, s.take_page(k, model), k, self.last_list, self.popular)
            s.steps += 1
            source = "cloud" if decision.outcome in FROM_CLOUD else "local"
            s.page_decision = PageDecision(
                source, decision.asked, decision.value, decision.threshold,
                decision.propensity, page.request_id, decision.features, s.steps,
            )  # fmt: skip
        self.outcomes[decision.outcome] += 1
        self._count_fill(fill)
        metrics.SERVED.labels(source).inc()
        return Page(page, source, decision, model.version if model else "", fill)

    def _fill_counts(self) -> dict[Fill, int]:
        with self._fills_lock:
            return dict(self.fills)

    def _count_fill(self, fill: Fill) -> None:
        with self._fills_lock:
            self.fills[fill] += 1
            first_short = fill == "short" and self.fills[fill] == 1
        metrics.PAGE_FILL.labels(fill).inc()
        if first_short:  # only an agent that knows fewer than k items; counted, logged once
            log.warning("a page shorter than k: the agent knows too few items (cloud down?)")

    def _model_for(self, s: DeviceSession, count: bool = False) -> OnnxReranker | None:
        """The re-ranker, unless it was trained on other embedding rows than the pool's: then
        the cloud's order (scores over rows of another space would be noise)."""
        model = self.reranker.current
        if model is None or self.handshake.compatible(model.embedding_version, s.pool, count):
            return model
        return None

    def warm_up(self, device_id: str, attempts: int = 3) -> bool:
        """Before any app asks: one cloud list for a device with no behaviour, so that a fresh
        agent whose first cloud calls are slow still has items to fill pages with (the fleet's
        list and popular items; nothing is a device's session)."""
        for _ in range(attempts):
            try:
                reply = self.cloud.recommend(device_id, self.pool_size, [], [])
            except CloudError:
                continue
            if len(reply.item_ids):
                self._remember(reply)
                return True
        return False

    def _remember(self, reply: CloudList) -> Pool:
        """A cloud list as a pool, kept as the fleet's latest list and counted as popular."""
        pool = Pool(
            reply.item_ids, reply.category_ids, logit(reply.ctr), reply.rows,
            reply.embedding_version, reply.request_id,
        )  # fmt: skip
        self.last_list = pool
        self.popular.note_list(pool.items.tolist(), pool.categories.tolist())
        return pool

    def _fallback(self, s: DeviceSession) -> Pool:
        seen = set(s.shown)
        keep = np.array([i not in seen for i in self.last_list.items.tolist()], dtype=bool)
        return self.last_list.subset(keep)

    def record_events(self, device_id: str, events: Sequence[AppEvent]) -> int:
        for e in events:  # validate all first: a bad batch records nothing
            if e.item_id < 0 or e.timestamp_ms < 0 or e.action not in tuple(Action):
                raise InvalidEvent(f"invalid event {e}")
        s = self.sessions.get(device_id)
        with s.lock:
            if self.examples is not None:  # the device's own training data (off when not training)
                local = self.examples.get(device_id)
                positions = {item: pos for pos, (item, _) in enumerate(s.page)}
                for e in events:
                    local.record(e.item_id, e.action, positions.get(e.item_id, 0))
            on_page = dict(s.page)
            for e in events:
                s.record_event(e.item_id, e.action, e.timestamp_ms)
                if e.item_id in on_page and (e.item_id, e.action) not in s.page_noted:
                    s.page_noted.add((e.item_id, e.action))  # once per item, action and page
                    self.popular.note_event(e.item_id, e.action, on_page[e.item_id])
                metrics.EVENTS.labels(NAMES[e.action]).inc()
            s.rerank(self._model_for(s))  # the pool's order follows every event at once
            if self.forwarder is not None:
                self.forwarder.offer(device_id, reported(events, s))
        return len(events)

    def _served(self) -> dict[str, int]:
        """App answers by source, from the outcomes (FROM_CLOUD serve a fresh cloud list)."""
        cloud = sum(n for o, n in self.outcomes.items() if o in FROM_CLOUD)
        return {"cloud": cloud, "local": sum(self.outcomes.values()) - cloud}

    def status(self) -> dict[str, object]:
        sessions = self.sessions.snapshot()
        steps = sum(s.steps for s in sessions)
        requests = sum(s.cloud_requests for s in sessions)
        return {
            "devices": len(sessions),
            "steps": steps,
            "cloud_requests": requests,
            "request_rate": requests / steps if steps else 0.0,
            "outcomes": dict(self.outcomes),
            "served": self._served(),
            "page_fill": self._fill_counts(),
            "short_pages": self._fill_counts().get("short", 0),
            "threshold": self.pacer.lam,
            "budget": self.pacer.budget,
            "mean_pool_size": float(np.mean([len(s.pool) for s in sessions])) if sessions else 0.0,
            "reranker_version": self.reranker.version,
            "shift_detector": self.shift_detector.version or "onnx"
            if self.shift_detector is not None and self.shift_detector.current is not None
            else "formula",
            "value_model": (self.value_model.version or "onnx")
            if self.value_model is not None and self.value_model.current is not None
            else "shift score",
            "federated_rounds": dict(self.training) if self.training is not None else None,
            "index_privacy": self.index_privacy.status() if self.index_privacy else None,
            "handshake": self.handshake.status(),
            "recommend_mode": "private" if self.private_recommend else "default",
            "private_requests": dict(self.private_carried) if self.private_recommend else None,
            "interest_encoder": self.interest_encoder.version
            if self.interest_encoder is not None
            else "",
            "events_forwarding": self.forwarder.status() if self.forwarder is not None else None,
        }
