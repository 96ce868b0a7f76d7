"""Builds the agent's service from settings: cloud client, models, sessions."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import grpc

from device_agent.cloud_client import CloudClient
from device_agent.forwarder import EventForwarder
from device_agent.inference.models import (
    InterestEncoderSlot,
    ModelPoller,
    RerankerSlot,
    ShiftDetectorSlot,
    ValueModelSlot,
)
from device_agent.policy.decision import Exploration
from device_agent.policy.features import SessionView
from device_agent.policy.pacing import Allowance, DualPacer
from device_agent.service import AgentService
from device_agent.session.registry import SessionRegistry
from device_agent.session.state import DeviceSession
from device_agent.settings import (
    AgentSettings,
    CloudLinkSettings,
    DeviceSettings,
    EventSettings,
    FeedSettings,
    ModelSettings,
    PacingSettings,
    TrainerSettings,
)
from device_agent.trainer.examples import ExampleStore, example_store
from device_agent.trainer.index_privacy import IndexPrivacy, PrivacyConfig, load_public_pool
from protos.auth import TokenMinter
from tandem_core.signing import Verifier, release_verifier

log = logging.getLogger(__name__)


@dataclass
class Agent:
    settings: DeviceSettings
    service: AgentService
    cloud: CloudClient
    reranker: RerankerSlot
    poller: ModelPoller
    trainer: Any = None  # TrainerLoop when federated training is on (torch imported only then)
    forwarder: EventForwarder | None = None  # app events → the cloud's ReportEvents, when on
    value_model: ValueModelSlot | None = None
    shift_detector: ShiftDetectorSlot | None = None  # learned detector; None until one arrives
    interest_encoder: InterestEncoderSlot | None = None  # the private Recommend's, when on


def build_session_factory(s: DeviceSettings):  # type: ignore[no-untyped-def]
    size = request_size(s.feed, s.pacing)
    feed, pacing = s.feed, s.pacing

    def new_session(device_id: str) -> DeviceSession:
        return DeviceSession(
            device_id=device_id,
            view=SessionView(n_categories=feed.n_categories, pool_size=size,
                             page_size=feed.page_size),
            allowance=Allowance(budget=pacing.request_budget, burst=pacing.pacer_burst),
            behavior_len=feed.behavior_len,
        )  # fmt: skip

    return new_session


REFILL_MARGIN = 1.5  # refills alone may use at most 1 / REFILL_MARGIN of the budget


def request_size(feed: FeedSettings, pacing: PacingSettings) -> int:
    """Items asked per cloud request. A pool of n items lasts n / page pages, and its refill is a
    request the budget counts, so refills alone cost page / n of the steps: at a 5 % budget and
    4-item pages a 48-item pool would spend 8.3 % on refills (measured by the load test). Ask
    for enough that refills stay under the budget with room left for value-paced requests."""
    budget = pacing.request_budget
    if budget <= 0:
        return feed.pool_size
    floor = math.ceil(REFILL_MARGIN * feed.page_size / budget)
    return min(max(feed.pool_size, floor), feed.max_pool_size)


def build_pacer(s: PacingSettings) -> DualPacer:
    """The fleet-wide price of a request (λ), learned from every device this agent serves."""
    return DualPacer(
        budget=s.request_budget, eta=s.pacer_eta, lam=s.initial_threshold, backoff=s.pacer_backoff
    )


def build_token_minter(s: AgentSettings) -> TokenMinter:
    """Each device's token under the fleet's issuing key, re-minted before it expires."""
    return TokenMinter(
        s.token_secret.get_secret_value().encode(), s.token_kid, s.token_lifetime_s,
        capacity=s.max_devices,
    )  # fmt: skip


def build_channel_credentials(s: CloudLinkSettings) -> grpc.ChannelCredentials | None:
    """TLS to the cloud from DEVICE_CLOUD_* PEM files (mutual with a client pair), or None."""
    if not s.tls:
        log.info("gRPC to the cloud at %s: plaintext", s.target)
        return None
    mutual = s.cert_file is not None and s.key_file is not None
    log.info(
        "gRPC to the cloud at %s: %s, roots %s", s.target, "mutual TLS" if mutual else "TLS",
        s.ca_file or "of the system",
    )  # fmt: skip
    return grpc.ssl_channel_credentials(
        root_certificates=s.ca_file.read_bytes() if s.ca_file is not None else None,
        private_key=s.key_file.read_bytes() if s.key_file is not None else None,
        certificate_chain=s.cert_file.read_bytes() if s.cert_file is not None else None,
    )


def build_agent(s: DeviceSettings) -> Agent:
    cloud = CloudClient(
        s.cloud.target, deadline_s=s.cloud.deadline_ms / 1000,
        tokens=build_token_minter(s.agent), credentials=build_channel_credentials(s.cloud),
        server_name=s.cloud.tls_server_name,
    )  # fmt: skip
    verifier = build_release_verifier(s.models)
    reranker = RerankerSlot(threads=s.models.onnx_threads, verifier=verifier)
    if not reranker.refresh(cloud, s.agent.agent_id, timeout_s=5.0):
        log.warning("no device model yet; serving the cloud's order until one arrives")
    value_model = ValueModelSlot(threads=s.models.onnx_threads, verifier=verifier)
    if not value_model.refresh(cloud, s.agent.agent_id, timeout_s=5.0):
        log.info("no request-value model yet; deciding on the shift score until one arrives")
    shift_detector = ShiftDetectorSlot(threads=s.models.onnx_threads, verifier=verifier)
    if not shift_detector.refresh(cloud, s.agent.agent_id, timeout_s=5.0):
        log.info("no shift detector yet; the shift score is the formula until one arrives")
    encoder = build_interest_encoder(s, cloud, verifier)
    # the private mode keeps the behaviour (item, action, timestamp) on the device: no forwarding
    forwarder = None if s.feed.private_recommend else build_forwarder(s.events, cloud)
    examples = None
    if s.trainer.enabled:
        examples = example_store(
            history_len=s.feed.behavior_len, capacity=s.trainer.examples_kept,
            max_devices=s.agent.max_devices,
        )  # fmt: skip
    service = AgentService(
        sessions=SessionRegistry(build_session_factory(s), max_devices=s.agent.max_devices),
        cloud=cloud, reranker=reranker, value_model=value_model,
        pool_size=request_size(s.feed, s.pacing),
        max_k=s.feed.max_k, policy=s.pacing.policy, pacer=build_pacer(s.pacing),
        examples=examples, forwarder=forwarder,
        exploration=Exploration(s.pacing.exploration, s.pacing.exploration_ask_prob),
        shift_detector=shift_detector, interest_encoder=encoder,
        private_recommend=s.feed.private_recommend,
    )  # fmt: skip
    if not service.warm_up(f"warmup-{s.agent.agent_id}"[:64]):
        log.warning("no warm-up list from the cloud; first pages may be short until one arrives")
    poller = ModelPoller(
        [reranker, value_model, shift_detector, *([encoder] if encoder is not None else [])],
        cloud, s.agent.agent_id, interval_s=s.models.model_poll_s,
    )  # fmt: skip
    trainer, privacy = None, None
    if examples is not None:
        privacy = build_privacy(s.trainer)
        trainer = build_trainer(s.trainer, examples, cloud, privacy)
    if trainer is not None:
        service.training = trainer.outcomes
        service.index_privacy = privacy
    return Agent(
        s, service, cloud, reranker, poller, trainer, service.forwarder, value_model,
        shift_detector, encoder,
    )  # fmt: skip


def build_interest_encoder(
    s: DeviceSettings, cloud: CloudClient, verifier: Verifier
) -> InterestEncoderSlot | None:
    """The private Recommend's encoder slot (fetched now, then polled), None when it is off."""
    if not s.feed.private_recommend:
        return None
    if s.events.forward:
        log.warning("DEVICE_PRIVATE_RECOMMEND: app events are not forwarded to the cloud")
    slot = InterestEncoderSlot(threads=s.models.onnx_threads, verifier=verifier)
    if not slot.refresh(cloud, s.agent.agent_id, timeout_s=5.0):
        log.warning("private Recommend without an interest encoder yet: sending the mean row")
    return slot


def build_release_verifier(s: ModelSettings) -> Verifier:
    """The one public key artifacts must be signed by (a ReleaseKeyError without one, unless
    unsigned artifacts were allowed explicitly)."""
    return release_verifier(
        s.release_public_key, s.release_public_key_file, s.allow_unsigned, "DEVICE_ALLOW_UNSIGNED"
    )


def build_forwarder(s: EventSettings, cloud: CloudClient) -> EventForwarder | None:
    if not s.forward:
        return None
    return EventForwarder(
        cloud, batch_size=s.batch, capacity=s.queue, interval_s=s.interval_ms / 1000,
        deadline_s=s.deadline_ms / 1000, retry_max_s=s.retry_max_s,
    )  # fmt: skip


def build_privacy(s: TrainerSettings) -> PrivacyConfig:
    """Permanent randomized response of the pulled ids: p, q, the devices' keys and ledgers."""
    index = IndexPrivacy(s.privacy_dir, load_public_pool(s.public_pool_file, s.public_pool_size))
    return PrivacyConfig(s.keep_prob, s.decoy_prob, index)


def build_trainer(
    s: TrainerSettings, examples: ExampleStore, cloud: CloudClient, privacy: PrivacyConfig
) -> Any:
    """The federated trainer; torch is imported here, only when training is switched on."""
    from device_agent.trainer.local_model import LocalTraining
    from device_agent.trainer.loop import TrainerLoop

    return TrainerLoop(
        examples, cloud,
        training=LocalTraining(epochs=s.epochs, lr=s.lr, optimizer=s.optimizer),
        privacy=privacy,
        min_examples=s.min_examples, interval_s=s.interval_s, timeout_s=s.timeout_s,
    )  # fmt: skip
