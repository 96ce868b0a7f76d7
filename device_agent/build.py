"""Builds the agent's service from settings: cloud client, models, sessions."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from device_agent.cloud_client import CloudClient
from device_agent.inference.models import ModelPoller, RerankerSlot
from device_agent.policy.features import SessionView
from device_agent.policy.pacing import Allowance, DualPacer
from device_agent.policy.value import RequestValueModel
from device_agent.service import AgentService
from device_agent.session.registry import SessionRegistry
from device_agent.session.state import DeviceSession
from device_agent.settings import DeviceSettings
from device_agent.trainer.examples import ExampleStore, example_store
from protos.auth import device_token

log = logging.getLogger(__name__)


@dataclass
class Agent:
    settings: DeviceSettings
    service: AgentService
    cloud: CloudClient
    reranker: RerankerSlot
    poller: ModelPoller
    trainer: Any = None  # TrainerLoop when federated training is on (torch imported only then)


def build_session_factory(s: DeviceSettings):  # type: ignore[no-untyped-def]
    size = request_size(s)

    def new_session(device_id: str) -> DeviceSession:
        return DeviceSession(
            device_id=device_id,
            view=SessionView(s.n_categories, size, s.page_size),
            allowance=Allowance(s.request_budget, burst=s.pacer_burst),
            behavior_len=s.behavior_len,
        )  # fmt: skip

    return new_session


REFILL_MARGIN = 1.5  # refills alone may use at most 1 / REFILL_MARGIN of the budget


def request_size(s: DeviceSettings) -> int:
    """Items asked per cloud request. A pool of n items lasts n / page pages, and its refill is a
    request the budget counts, so refills alone cost page / n of the steps: at a 5 % budget and
    4-item pages a 48-item pool would spend 8.3 % on refills (measured by the load test). Ask
    for enough that refills stay under the budget with room left for value-paced requests."""
    if s.request_budget <= 0:
        return s.pool_size
    floor = math.ceil(REFILL_MARGIN * s.page_size / s.request_budget)
    return min(max(s.pool_size, floor), s.max_pool_size)


def build_pacer(s: DeviceSettings) -> DualPacer:
    """The fleet-wide price of a request (λ), learned from every device this agent serves."""
    return DualPacer(
        s.request_budget, eta=s.pacer_eta, lam=s.initial_threshold, backoff=s.pacer_backoff
    )


def build_agent(s: DeviceSettings) -> Agent:
    secret = s.token_secret.get_secret_value().encode()
    cloud = CloudClient(
        s.cloud_target, s.cloud_deadline_ms / 1000, lambda device: device_token(secret, device)
    )
    reranker = RerankerSlot(s.onnx_threads)
    if not reranker.refresh(cloud, s.agent_id, timeout_s=5.0):
        log.warning("no device model yet; serving the cloud's order until one arrives")
    value_model = None
    if s.value_model is not None:
        value_model = RequestValueModel(s.value_model.read_bytes(), s.onnx_threads)
    examples = (
        example_store(s.behavior_len, s.train_examples_kept, s.max_devices) if s.train else None
    )
    service = AgentService(
        SessionRegistry(build_session_factory(s), s.max_devices), cloud, reranker, value_model,
        request_size(s), s.max_k, s.policy, build_pacer(s), examples,
    )  # fmt: skip
    poller = ModelPoller(reranker, cloud, s.agent_id, s.model_poll_s)
    trainer = build_trainer(s, examples, cloud) if examples is not None else None
    if trainer is not None:
        service.training = trainer.outcomes
    return Agent(s, service, cloud, reranker, poller, trainer)


def build_trainer(s: DeviceSettings, examples: ExampleStore, cloud: CloudClient) -> Any:
    """The federated trainer; torch is imported here, only when training is switched on."""
    from device_agent.trainer.local_model import LocalTraining
    from device_agent.trainer.loop import TrainerLoop
    from device_agent.trainer.participant import PrivacyConfig

    return TrainerLoop(
        examples, cloud, LocalTraining(s.train_epochs, s.train_lr, optimizer=s.train_optimizer),
        PrivacyConfig(s.train_keep_prob, s.train_decoy_prob), s.train_min_examples,
        s.train_interval_s, timeout_s=s.train_timeout_s,
    )  # fmt: skip
