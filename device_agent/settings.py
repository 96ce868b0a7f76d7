"""Typed settings of the device agent (`DEVICE_*` environment variables), validated at start-up.

Grouped by concern, `DeviceSettings.<group>`; each group reads its own prefix, so the variables
stay the flat names deploy/ and the tools set (`DEVICE_CLOUD_TARGET` is `cloud.target`):

- `agent` (`DEVICE_*`): host, port, REST TLS, ports file, agent id, token issuing key (secret,
  kid, lifetime), in-memory limits
- `cloud` (`DEVICE_CLOUD_*`): the cloud's gRPC target, each call's deadline, TLS to it
- `models` (`DEVICE_*`): the release public key models must be signed by, ONNX threads, how
  often the registry is polled for the re-ranker and the request-value model
- `feed` (`DEVICE_*`): pool and page sizes, categories, behaviour kept, max k, private Recommend
- `pacing` (`DEVICE_*`): the policy and the request budget's pacer
- `events` (`DEVICE_EVENTS_*`): forwarding app events to the cloud (batch, queue, deadline)
- `trainer` (`DEVICE_TRAIN_*`): on-device federated training; `DEVICE_TRAIN` itself switches it
  on (`trainer.enabled`)

Built once in main by `load_settings()` and passed in; never read at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protos.auth import APP_KID, KID
from tandem_core.settings import group_config
from tandem_core.settings import load_settings as load_groups


class AgentSettings(BaseSettings):
    model_config = group_config("DEVICE_")

    host: str = "127.0.0.1"
    http_port: int = Field(8100, ge=0, le=65535)
    ports_file: Path | None = None
    agent_id: str = Field("agent-0", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # Tokens are issued per device at registration; a simulated fleet derives them from the
    # cloud's secret instead (one agent process stands for many phones).
    # No default (a known key would mint any device's token): at least 16 random bytes.
    token_secret: SecretStr = Field(min_length=16)
    token_kid: str = Field("k0", pattern=KID.pattern)  # the secret's key id in the cloud's ring
    # each device's token is re-minted when a quarter of this is left; at most the cloud's
    # CLOUD_AUTH_MAX_TOKEN_LIFETIME_S
    token_lifetime_s: int = Field(3600, ge=60, le=30 * 86_400)
    # TLS of the agent's REST API, PEM files; unset = plaintext (local development)
    http_tls_cert_file: FilePath | None = None
    http_tls_key_file: FilePath | None = None
    # Apps call the REST API with `Authorization: Bearer <token>`, the v2 token of their device
    # id under this key (protos/auth.py; kid `app_kid`), issued to the app when it pairs with
    # the agent. A token opens only its own device's session. No default; not the token secret.
    app_secret: SecretStr = Field(min_length=16)
    app_kid: str = Field(APP_KID, pattern=KID.pattern)
    app_max_token_lifetime_s: int = Field(30 * 86_400, ge=60)  # expiries further ahead refused
    # /metrics and /v1/status: open (bind the agent to a private address) unless this is set;
    # then they need `Authorization: Bearer <ops token>`
    ops_token: SecretStr = SecretStr("")
    max_devices: int = Field(100_000, ge=1)  # sessions kept in memory, least recent evicted
    max_events: int = Field(200, ge=1, le=10_000)  # per report call
    max_body_bytes: int = Field(256 * 1024, ge=1024)  # larger REST bodies: 413 before parsing

    @model_validator(mode="after")
    def _secrets_differ(self) -> AgentSettings:
        app, fleet = self.app_secret.get_secret_value(), self.token_secret.get_secret_value()
        if app == fleet:
            raise ValueError("DEVICE_APP_SECRET must differ from DEVICE_TOKEN_SECRET")
        ops = self.ops_token.get_secret_value()
        if ops and len(ops.encode()) < 16:
            raise ValueError("DEVICE_OPS_TOKEN, when set, must be at least 16 bytes")
        return self

    @model_validator(mode="after")
    def _tls_files_pair(self) -> AgentSettings:
        if (self.http_tls_cert_file is None) != (self.http_tls_key_file is None):
            raise ValueError("set both DEVICE_HTTP_TLS_CERT_FILE and _KEY_FILE, or neither")
        return self


class CloudLinkSettings(BaseSettings):
    model_config = group_config("DEVICE_CLOUD_")

    target: str = "127.0.0.1:50051"
    deadline_ms: int = Field(150, ge=1, le=60_000)
    # TLS to the cloud's gRPC (off = plaintext, local development). The certificate must chain
    # to `ca_file` (PEM; unset: the system's roots) and name `tls_server_name` if set (tests),
    # else the target's host. `cert_file` + `key_file`: this agent's certificate, mutual TLS.
    tls: bool = False
    ca_file: FilePath | None = None
    tls_server_name: str | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None

    @model_validator(mode="after")
    def _tls_options_need_tls(self) -> CloudLinkSettings:
        extras = (self.ca_file, self.tls_server_name, self.cert_file, self.key_file)
        if not self.tls and any(x is not None for x in extras):
            raise ValueError("DEVICE_CLOUD_CA_FILE and the other TLS files need DEVICE_CLOUD_TLS")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both DEVICE_CLOUD_CERT_FILE and _KEY_FILE, or neither")
        return self


class ModelSettings(BaseSettings):
    model_config = group_config("DEVICE_")

    # The re-ranker and the request-value model come from the cloud registry; each is installed
    # only when signed by this Ed25519 key (PEM or base64 of the 32 raw bytes, or a file holding
    # either). No default: without one the agent refuses to start, unless unsigned models are
    # allowed explicitly (development only; sha256 and the ONNX inputs are still checked).
    release_public_key: str | None = None
    release_public_key_file: Path | None = None
    allow_unsigned: bool = False
    onnx_threads: int = Field(1, ge=1, le=16)
    model_poll_s: float = Field(30.0, gt=0)  # how often the registry is asked (cheap if current)


class FeedSettings(BaseSettings):
    model_config = group_config("DEVICE_")

    pool_size: int = Field(48, ge=1, le=500)  # items asked from the cloud per request, at least
    max_pool_size: int = Field(200, ge=1, le=2000)  # the cloud's max k; caps the budget's floor
    page_size: int = Field(4, ge=1, le=100)  # the app's usual page (for the value features)
    n_categories: int = Field(48, ge=1)
    behavior_len: int = Field(30, ge=1, le=200)
    max_k: int = Field(100, ge=1)
    # the private Recommend: send the interest encoder's pseudo-history of the last clicks'
    # rows (their mean row while no encoder is installed), never the event window
    private_recommend: bool = False


class PacingSettings(BaseSettings):
    model_config = group_config("DEVICE_")

    # "value": ask when the request's value clears the paced threshold (the product);
    # "always" / "never": the AlwaysQ ceiling and NoQ floor the demo compares it with
    policy: Literal["value", "always", "never"] = "value"
    # share of feed steps that may ask the cloud, per device
    request_budget: float = Field(0.10, ge=0.0, le=1.0)
    pacer_eta: float = Field(0.05, gt=0)
    pacer_burst: float = Field(2.0, ge=1.0)
    pacer_backoff: float = Field(0.5, ge=0.0)
    initial_threshold: float = Field(0.0, ge=0.0)
    # ε: share of the policy's decisions randomised (ε-greedy; device_agent/policy/decision.py),
    # each logged with its propensity so the value model can be retrained from the fleet's logs.
    # Exploratory asks spend the budget like any other request.
    exploration: float = Field(0.10, ge=0.0, lt=1.0)
    exploration_ask_prob: float = Field(0.5, gt=0.0, lt=1.0)  # P(ask) in a randomised decision


class EventSettings(BaseSettings):
    """Forwarding app events to the cloud's ReportEvents (the training logs), off the app's path."""

    model_config = group_config("DEVICE_EVENTS_")

    forward: bool = True
    batch: int = Field(200, ge=1, le=500)  # events per ReportEvents call (the cloud's max: 500)
    queue: int = Field(100_000, ge=1)  # events held while the cloud is away; oldest dropped
    interval_ms: int = Field(200, ge=1, le=60_000)  # a partial batch waits at most this long
    deadline_ms: int = Field(1000, ge=1, le=60_000)  # per call
    retry_max_s: float = Field(5.0, gt=0)  # backoff cap while the cloud refuses or is down


class TrainerSettings(BaseSettings):
    """On-device federated training (needs the `train` extra: torch; off the inference path)."""

    model_config = SettingsConfigDict(
        env_prefix="DEVICE_TRAIN_", frozen=True, populate_by_name=True
    )

    enabled: bool = Field(False, validation_alias="DEVICE_TRAIN")
    interval_s: float = Field(10.0, gt=0)  # how often the trainer checks for a round
    min_examples: int = Field(20, ge=1)  # impressions a device needs before it trains
    examples_kept: int = Field(2000, ge=1)  # per device, oldest dropped
    epochs: int = Field(2, ge=1)
    lr: float = Field(0.5, gt=0)
    # SGD only on devices: Adam restarted every round steps ~lr on each of the ~47k dense
    # parameters, an update norm (~130 at lr 0.5) the cloud's push bounds refuse (issue 15);
    # the offline experiment still compares Adam (device_agent/trainer/local_model.py).
    optimizer: Literal["sgd"] = "sgd"
    keep_prob: float = Field(0.9, gt=0, le=1)  # p of the randomized-response padding
    decoy_prob: float = Field(0.1, ge=0, lt=1)  # q; ε = ln(p(1−q) / (q(1−p)))
    # Permanent randomized response (device_agent/trainer/index_privacy.py): each device's key
    # and ledger (fixed bits, ε spent) live here; unset, in memory only and a restart re-keys
    # every device unrecorded. The public pool joins every device's decoy pool: the first
    # PUBLIC_POOL_SIZE ids of the file (one a line, e.g. the bundle's most clicked; 0: all),
    # or without a file the catalogue ids 0..PUBLIC_POOL_SIZE−1.
    privacy_dir: Path | None = None
    public_pool_file: Path | None = None
    public_pool_size: int = Field(0, ge=0)
    timeout_s: float = Field(5.0, gt=0)  # deadline of each pull / push

    @model_validator(mode="after")
    def _padding_carries_signal(self) -> TrainerSettings:
        if self.decoy_prob >= self.keep_prob:  # the cloud refuses such pushes (privacy.check)
            raise ValueError("DEVICE_TRAIN_DECOY_PROB must be below DEVICE_TRAIN_KEEP_PROB")
        return self


class DeviceSettings(BaseModel):
    """Every group; `DeviceSettings()` reads them all from the environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: AgentSettings = Field(default_factory=AgentSettings)
    cloud: CloudLinkSettings = Field(default_factory=CloudLinkSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    feed: FeedSettings = Field(default_factory=FeedSettings)
    pacing: PacingSettings = Field(default_factory=PacingSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)


def load_settings() -> DeviceSettings:
    """The settings from `DEVICE_*`, or exit 2 naming every bad variable (no traceback)."""
    return load_groups(DeviceSettings, "DEVICE_*")
