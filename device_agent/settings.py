"""Typed settings of the device agent (`DEVICE_*` environment variables), validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeviceSettings(BaseSettings):
    """Built once in main and passed in; never read at import time."""

    model_config = SettingsConfigDict(env_prefix="DEVICE_", frozen=True)

    host: str = "127.0.0.1"
    http_port: int = Field(8100, ge=0, le=65535)
    ports_file: Path | None = None
    agent_id: str = Field("agent-0", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

    # the cloud
    cloud_target: str = "127.0.0.1:50051"
    cloud_deadline_ms: int = Field(150, ge=1, le=60_000)
    model_poll_s: float = Field(30.0, gt=0)
    # Tokens are issued per device at registration; a simulated fleet derives them from the
    # cloud's secret instead (one agent process stands for many phones).
    token_secret: SecretStr = SecretStr("dev-only-secret-change-me")

    # models
    value_model: Path | None = None  # ONNX request-value model; without it: the shift score
    onnx_threads: int = Field(1, ge=1, le=16)

    # the feed
    pool_size: int = Field(48, ge=1, le=500)  # items asked from the cloud per request, at least
    max_pool_size: int = Field(200, ge=1, le=2000)  # the cloud's max k; caps the budget's floor
    page_size: int = Field(4, ge=1, le=100)  # the app's usual page (for the value features)
    n_categories: int = Field(48, ge=1)
    behavior_len: int = Field(30, ge=1, le=200)
    max_k: int = Field(100, ge=1)
    max_devices: int = Field(100_000, ge=1)  # sessions kept in memory, least recent evicted
    max_events: int = Field(200, ge=1)

    # "value": ask when the request's value clears the paced threshold (the product);
    # "always" / "never": the AlwaysQ ceiling and NoQ floor the demo compares it with
    policy: Literal["value", "always", "never"] = "value"
    # pacing: share of feed steps that may ask the cloud, per device
    request_budget: float = Field(0.10, ge=0.0, le=1.0)
    pacer_eta: float = Field(0.05, gt=0)
    pacer_burst: float = Field(2.0, ge=1.0)
    pacer_backoff: float = Field(0.5, ge=0.0)
    initial_threshold: float = Field(0.0, ge=0.0)

    # on-device federated training (needs the `train` extra: torch; off the inference path)
    train: bool = False
    train_interval_s: float = Field(10.0, gt=0)  # how often the trainer checks for a round
    train_min_examples: int = Field(20, ge=1)  # impressions a device needs before it trains
    train_examples_kept: int = Field(2000, ge=1)  # per device, oldest dropped
    train_epochs: int = Field(2, ge=1)
    train_lr: float = Field(0.5, gt=0)
    train_optimizer: Literal["sgd", "adam"] = "sgd"  # see device_agent/trainer/local_model.py
    train_keep_prob: float = Field(0.9, gt=0, le=1)  # p of the randomized-response padding
    train_decoy_prob: float = Field(0.1, ge=0, lt=1)  # q; ε = ln(p(1−q) / (q(1−p)))
    train_timeout_s: float = Field(5.0, gt=0)  # deadline of each pull / push
