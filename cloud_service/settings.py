"""Typed settings of the cloud service (`CLOUD_*` environment variables), validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CloudSettings(BaseSettings):
    """Built once in main and passed to every part; never read at import time."""

    model_config = SettingsConfigDict(env_prefix="CLOUD_", frozen=True)

    # transports
    host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    http_port: int = Field(8080, ge=0, le=65535)
    grpc_workers: int = Field(8, ge=1, le=256)
    grpc_max_receive_bytes: int = Field(4 << 20, ge=1024)  # pushes of a few thousand rows fit
    grpc_max_send_bytes: int = Field(32 << 20, ge=1024)  # an ONNX device model fits
    http_max_body_bytes: int = Field(1 << 20, ge=1024)
    shutdown_grace_s: float = Field(5.0, ge=0)
    ports_file: Path | None = None  # where to write the bound ports as JSON (for port 0)

    # models
    bundle_dir: Path = Path("artifacts/ranker/serving")
    device_model_dir: Path = Path("artifacts/device")
    onnx_threads: int = Field(1, ge=1, le=64)
    blas_threads: int = Field(1, ge=1, le=64)

    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("tandem", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    redis_socket_timeout_s: float = Field(0.25, gt=0)
    redis_retries: int = Field(2, ge=0, le=10)
    redis_open_circuit_s: float = Field(1.0, ge=0)  # skip Redis this long after a failure
    session_ttl_s: int = Field(1800, ge=1)
    embedding_shards: int = Field(8, ge=1, le=4096)  # measured: 8 shards 0.45 ms, 64 1.1 ms
    embedding_batch: int = Field(256, ge=1, le=10_000)  # fields per HMGET
    embedding_ttl_s: int = Field(86_400, ge=1)
    events_stream_maxlen: int = Field(1_000_000, ge=1)

    # budget: a token bucket shared by all replicas
    budget_rate: float = Field(200.0, gt=0)  # Recommend calls per second, all replicas together
    budget_burst: float = Field(400.0, ge=1)
    budget_local_share: float = Field(1.0, gt=0, le=1)  # of the rate, per replica, if Redis is down

    # live dashboard (GET /dashboard): agents' base URLs as a JSON list, polled for their answers
    dashboard_agents: list[Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]] = []
    dashboard_agent_timeout_s: float = Field(0.2, gt=0, le=5)  # per agent, all polled at once
    dashboard_window_s: float = Field(5.0, gt=0, le=600)  # rates and quantiles over this window

    # federated learning (the parameter server in every replica; rounds in the aggregator)
    fl_devices_per_round: int = Field(20, ge=1)
    fl_over_select: float = Field(0.3, ge=0)
    fl_quorum_share: float = Field(0.5, gt=0, le=1)
    fl_round_s: float = Field(30.0, gt=0)
    fl_staleness_bound: int = Field(2, ge=0)
    fl_staleness_decay: float = Field(0.5, gt=0, le=1)
    fl_max_rows: int = Field(2000, ge=1)
    fl_algorithm: Literal["fedsubavg", "fedavg", "fedlaavg"] = "fedsubavg"
    fl_clip_norm: float = Field(0.0, ge=0)  # 0 = no clipping
    fl_clip_median: bool = False  # clip each update to the round's median norm (adaptive)
    fl_max_correction: float = Field(0.0, ge=0)  # cap of FedSubAvg's N / N_m; 0 = uncapped
    fl_min_contributors: int = Field(1, ge=1)
    fl_trim: float = Field(0.0, ge=0, lt=0.5)  # trimmed-mean share per side for dense; 0 = off
    aggregator_name: str = Field("aggregator-0", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    aggregator_heartbeat: Path | None = None  # touched every loop turn (container healthcheck)

    # requests
    auth_secret: SecretStr = SecretStr("dev-only-secret-change-me")
    max_k: int = Field(200, ge=1, le=2000)
    max_recent: int = Field(200, ge=1, le=10_000)
    max_exclude: int = Field(5000, ge=0)
    max_events: int = Field(500, ge=1)
    session_recent_len: int = Field(50, ge=1)
    session_served_len: int = Field(400, ge=0)
    exclude_served: bool = False  # see RecommendLimits.exclude_served
    purchase_weight: float = Field(1.0, ge=0)  # score = pCTR + w · pCTCVR
    n_embedding: int = Field(200, ge=0)
    n_cooccurrence: int = Field(100, ge=0)
    n_popular: int = Field(50, ge=1)
