"""Typed settings of the cloud service (`CLOUD_*` environment variables), validated at start-up.

Grouped by concern, `CloudSettings.<group>`; each group reads its own prefix, so the variables
stay the flat names deploy/ and the tools set (`CLOUD_FL_ROUND_S` is `federated.round_s`):

- `transport` (`CLOUD_*`): host, ports, gRPC workers, message and body limits, ports file,
  shutdown grace
- `models` (`CLOUD_*`): serving bundle, device models (re-ranker, request-value model), the
  release public key they must be signed by, how often `current` is checked, runtime threads,
  retrieval sizes, the purchase weight of the score
- `store` (`CLOUD_*`): Redis URL (one server or a cluster), key prefix, deadline, retries,
  breaker, session TTL, stream
- `budget` (`CLOUD_BUDGET_*`): the Recommend token bucket shared by all replicas
- `requests` (`CLOUD_*`): the device tokens' secret, what a request may ask, what a session keeps
- `dashboard` (`CLOUD_DASHBOARD_*`): the live dashboard's agents, their deadline, the window
- `federated` (`CLOUD_FL_*`): rounds and robust aggregation
- `aggregator` (`CLOUD_AGGREGATOR_*`): the aggregator process's name and heartbeat file

Built once in main by `load_settings()` and passed in; never read at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings

from cloud_service.auth import parse_keyring
from tandem_core.settings import group_config
from tandem_core.settings import load_settings as load_groups


class TransportSettings(BaseSettings):
    model_config = group_config("CLOUD_")

    host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    http_port: int = Field(8080, ge=0, le=65535)
    grpc_workers: int = Field(8, ge=1, le=256)
    grpc_max_receive_bytes: int = Field(4 << 20, ge=1024)  # pushes of a few thousand rows fit
    grpc_max_send_bytes: int = Field(32 << 20, ge=1024)  # an ONNX device model fits
    http_max_body_bytes: int = Field(1 << 20, ge=1024)
    shutdown_grace_s: float = Field(5.0, ge=0)
    ports_file: Path | None = None  # where to write the bound ports as JSON (for port 0)
    # TLS, PEM files; unset = plaintext (local development; the start-up log says which).
    # gRPC: certificate chain + key, and optionally the CA client certificates must chain to
    # (mutual TLS: a client without such a certificate is refused). REST: uvicorn's pair.
    grpc_tls_cert_file: FilePath | None = None
    grpc_tls_key_file: FilePath | None = None
    grpc_tls_client_ca_file: FilePath | None = None
    http_tls_cert_file: FilePath | None = None
    http_tls_key_file: FilePath | None = None

    @model_validator(mode="after")
    def _tls_files_pair(self) -> TransportSettings:
        pairs = {
            "GRPC": (self.grpc_tls_cert_file, self.grpc_tls_key_file),
            "HTTP": (self.http_tls_cert_file, self.http_tls_key_file),
        }
        for kind, (cert, key) in pairs.items():
            if (cert is None) != (key is None):
                raise ValueError(f"set both CLOUD_{kind}_TLS_CERT_FILE and _KEY_FILE, or neither")
        if self.grpc_tls_client_ca_file is not None and self.grpc_tls_cert_file is None:
            raise ValueError("CLOUD_GRPC_TLS_CLIENT_CA_FILE needs CLOUD_GRPC_TLS_CERT_FILE")
        return self


class ModelSettings(BaseSettings):
    model_config = group_config("CLOUD_")

    # each a registry kind directory (`current` + `versions/`, followed) or one version directory
    bundle_dir: Path = Path("artifacts/registry/ranker_bundle")
    device_model_dir: Path = Path("artifacts/registry/reranker")
    value_model_dir: Path | None = None  # the request-value model devices fetch; None: not served
    shift_detector_dir: Path | None = None  # the learned interest-shift detector; None: not served
    interest_encoder_dir: Path | None = None  # the private Recommend's encoder; None: not served
    # Artifacts must be signed by this Ed25519 key (PEM or base64 of the 32 raw bytes, or a file
    # holding either). No default: without one the replica refuses to start, unless unsigned
    # artifacts are allowed explicitly (development only; sha256 is then still checked).
    release_public_key: str | None = None
    release_public_key_file: Path | None = None
    allow_unsigned: bool = False
    model_poll_s: float = Field(5.0, gt=0)  # how often the bundle's `current` is checked
    onnx_threads: int = Field(1, ge=1, le=64)
    blas_threads: int = Field(1, ge=1, le=64)
    purchase_weight: float = Field(1.0, ge=0)  # score = pCTR + w · pCTCVR
    n_embedding: int = Field(200, ge=0)  # candidates per retrieval source (RetrievalConfig)
    n_cooccurrence: int = Field(100, ge=0)
    n_popular: int = Field(50, ge=1)


class StoreSettings(BaseSettings):
    model_config = group_config("CLOUD_")

    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("tandem", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    redis_socket_timeout_s: float = Field(0.25, gt=0)
    redis_retries: int = Field(2, ge=0, le=10)
    redis_open_circuit_s: float = Field(1.0, ge=0)  # skip Redis this long after a failure
    session_ttl_s: int = Field(1800, ge=1)
    events_stream_maxlen: int = Field(1_000_000, ge=1)
    events_batch_ttl_s: int = Field(86_400, ge=1)  # a retried batch id is stored once within this
    # Redis Cluster: CLOUD_REDIS_URL then names any one node (redis[s]://host:port, database 0);
    # the client reads the slot map from it and finds the others (docs/deploy.md)
    redis_cluster: bool = False

    @model_validator(mode="after")
    def _cluster_url(self) -> StoreSettings:
        url = urlsplit(self.redis_url)
        if self.redis_cluster and (
            url.scheme not in ("redis", "rediss") or url.path.strip("/") not in ("", "0")
        ):
            raise ValueError(
                "with CLOUD_REDIS_CLUSTER, CLOUD_REDIS_URL is redis[s]://host:port of one node "
                "(a cluster has only database 0, no unix socket)"
            )
        return self


class BudgetSettings(BaseSettings):
    """A token bucket shared by all replicas."""

    model_config = group_config("CLOUD_BUDGET_")

    rate: float = Field(200.0, gt=0)  # Recommend calls per second, all replicas together
    burst: float = Field(400.0, ge=1)
    local_share: float = Field(1.0, gt=0, le=1)  # of the rate, per replica, if Redis is down


class RequestSettings(BaseSettings):
    model_config = group_config("CLOUD_")

    # Device tokens (protos/auth.py). CLOUD_AUTH_KEYS, when set, is the whole keyring,
    # "kid1:secret,kid0:oldsecret", current key first, every key accepted, and CLOUD_AUTH_SECRET
    # is not read; otherwise CLOUD_AUTH_SECRET is the one key, kid "k0".
    # No default: a known secret would let anyone mint a token for any device. The serving
    # process refuses to start (exit 2) unless one of the two is set; jobs that check no token
    # (aggregator, publish) need neither.
    auth_secret: SecretStr = SecretStr("")
    auth_keys: SecretStr = SecretStr("")
    auth_clock_skew_s: int = Field(30, ge=0, le=600)  # allowance either side of the expiry
    auth_max_token_lifetime_s: int = Field(86_400, ge=60)  # expiries further ahead are refused
    # bare-HMAC tokens (before v2, no kid, no expiry): off; on only while agents upgrade
    auth_accept_legacy: bool = False
    max_k: int = Field(200, ge=1, le=2000)
    max_recent: int = Field(200, ge=1, le=10_000)
    max_exclude: int = Field(5000, ge=0)
    max_events: int = Field(500, ge=1)
    session_recent_len: int = Field(50, ge=1)
    session_served_len: int = Field(400, ge=0)
    # Exclude everything sent before, not only what the device says it showed. Off by default:
    # measured in the demo, a device that refreshes its pool got its own best unshown items
    # withheld, and AlwaysQ fell below NoQ. On for clients that page without exclusions.
    exclude_served: bool = False

    @field_validator("auth_keys")
    @classmethod
    def _keyring_parses(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            parse_keyring(value.get_secret_value())  # its errors name no secret
        return value


class DashboardSettings(BaseSettings):
    """GET /dashboard: agents' base URLs as a JSON list, polled for their answers."""

    model_config = group_config("CLOUD_DASHBOARD_")

    agents: list[Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]] = []
    agent_timeout_s: float = Field(0.2, gt=0, le=5)  # per agent, all polled at once
    window_s: float = Field(5.0, gt=0, le=600)  # rates and quantiles over this window


class FederatedSettings(BaseSettings):
    """The parameter server in every replica; the rounds in the aggregator."""

    model_config = group_config("CLOUD_FL_")

    devices_per_round: int = Field(20, ge=1)
    over_select: float = Field(0.3, ge=0)
    quorum_share: float = Field(0.5, gt=0, le=1)
    round_s: float = Field(30.0, gt=0)
    staleness_bound: int = Field(2, ge=0)
    staleness_decay: float = Field(0.5, gt=0, le=1)
    max_rows: int = Field(2000, ge=1)
    algorithm: Literal["fedsubavg", "fedavg", "fedlaavg"] = "fedsubavg"
    laavg_max_age: int = Field(5, ge=0)  # FedLaAvg: rounds a remembered update is reused in
    # how a row is combined over the devices holding it: the algorithm's weighted mean, or a
    # coordinate-wise trimmed mean (share `trim` per side) / median (Yin et al., ICML 2018)
    row_aggregator: Literal["mean", "trimmed_mean", "median"] = "mean"
    # push validation (hard bounds, refused with INVALID_ARGUMENT; 0 = no norm bound)
    max_samples: int = Field(10_000, ge=1)  # num_samples one push may claim
    max_row_norm: float = Field(10.0, ge=0)  # L2 norm of one row delta
    max_update_norm: float = Field(100.0, ge=0)  # L2 norm of the whole update
    # server-side clipping in the aggregator
    clip_norm: float = Field(0.0, ge=0)  # fixed L2 bound per update; 0 = none
    clip_median: bool = True  # clip each update to the round's median norm (adaptive)
    clip_row_median: bool = False  # clip each row delta to the round's median row-delta norm
    max_correction: float = Field(0.0, ge=0)  # cap of FedSubAvg's N / N_m; 0 = uncapped
    min_contributors: int = Field(1, ge=1)  # devices that trained a row (count > 0) to move it
    min_contributor_share: float = Field(
        0.25, ge=0, le=1,
        description="The contributor floor is also ≥ ceil(share × the round's pushers); 0 = off. "
        "On by default (1/4: 15 of 60, 5 of 20, 1 up to 4) against a backdoor on a cold item: "
        "a row only colluders hold moves only in rounds where they reach the floor. Measured "
        "with 10 % colluders (~6 of 60 a round), 10 rounds, 3 seeds: the target stayed at its "
        "clean rank (2514 / 541 / 1596 vs 2280 / 528 / 1790) for −0.53 AUC points on clean runs; "
        "1/6 cost −0.11 but let it climb 650 → 116 and 1623 → 254 (docs/benchmarks.md, issue 15). "
        "Rows below the floor learn from central retraining (training.ranker.train --logs). "
        "A fixed count would not scale with the cohort.",
    )  # fmt: skip
    # bound each aggregated row step at this × the round's median row step; 0 = none
    max_row_step: float = Field(0.0, ge=0)
    trim: float = Field(0.0, ge=0, lt=0.5)  # trimmed-mean share per side for dense; 0 = off
    # contribution scores (influence on the stored validation signal, federated/contribution.py)
    contrib_mode: Literal["first_order", "fisher"] = "fisher"
    exclude_low_contrib: float = Field(0.0, ge=0, le=0.5)  # share of a round left out; 0 = off
    # secure aggregation (Bonawitz et al., CCS 2017; docs/federated.md): devices push masked
    # inputs, the server sees only the cohort's sums. Per-device defences (clipping to the
    # median, trimmed/median rows, step bounds, contribution scores) cannot see one device's
    # update then: the device clips its own (secagg_* bounds), the contributor floor still holds.
    secure_aggregation: bool = False
    secagg_phase_s: float = Field(10.0, gt=0, le=600)  # each phase waits at most this long
    secagg_row_clip: float = Field(16.0, gt=0)  # |count × row delta| per coordinate
    secagg_dense_clip: float = Field(64.0, gt=0)  # |samples × dense delta| per coordinate
    secagg_count_cap: int = Field(64, ge=1, le=1 << 16)  # a row's sample count, clipped
    secagg_sample_cap: int = Field(1000, ge=1, le=1 << 20)  # the dense weight, clipped

    @model_validator(mode="after")
    def _secure_rules(self) -> FederatedSettings:
        if not self.secure_aggregation:
            return self
        per_device = {
            "CLOUD_FL_ALGORITHM=fedsubavg": self.algorithm == "fedsubavg",
            "CLOUD_FL_ROW_AGGREGATOR=mean": self.row_aggregator == "mean",
            "CLOUD_FL_TRIM=0": self.trim == 0,
            "CLOUD_FL_CLIP_ROW_MEDIAN=false": not self.clip_row_median,
            "CLOUD_FL_MAX_ROW_STEP=0": self.max_row_step == 0,
            "CLOUD_FL_EXCLUDE_LOW_CONTRIB=0": self.exclude_low_contrib == 0,
        }
        broken = [k for k, ok in per_device.items() if not ok]
        if broken:
            raise ValueError(
                "secure aggregation hides each device's update, so rules that need one device's "
                f"update cannot run; set {', '.join(broken)}"
            )
        return self


class AggregatorSettings(BaseSettings):
    model_config = group_config("CLOUD_AGGREGATOR_")

    name: str = Field("aggregator-0", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    heartbeat: Path | None = None  # touched every loop turn (container healthcheck)


class CloudSettings(BaseModel):
    """Every group; `CloudSettings()` reads them all from the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transport: TransportSettings = Field(default_factory=TransportSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    requests: RequestSettings = Field(default_factory=RequestSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    federated: FederatedSettings = Field(default_factory=FederatedSettings)
    aggregator: AggregatorSettings = Field(default_factory=AggregatorSettings)


def load_settings() -> CloudSettings:
    """The settings from `CLOUD_*`, or exit 2 naming every bad variable (no traceback)."""
    return load_groups(CloudSettings, "CLOUD_*")
