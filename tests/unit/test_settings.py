"""Both processes' settings: grouped in code, the same flat variables outside, errors by name."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_service.build import MissingAuthKey, build_auth
from cloud_service.settings import CloudSettings
from cloud_service.settings import load_settings as load_cloud
from device_agent.settings import DeviceSettings
from device_agent.settings import load_settings as load_device
from tandem_core.settings import EXIT_BAD_SETTINGS, describe, env_names

pytestmark = pytest.mark.unit

# deploy/, localrun/, loadtest/ and the e2e tests set these: renaming one breaks them silently
CLOUD_VARIABLES = {
    "HOST", "GRPC_PORT", "HTTP_PORT", "GRPC_WORKERS", "GRPC_MAX_RECEIVE_BYTES",
    "GRPC_MAX_SEND_BYTES", "HTTP_MAX_BODY_BYTES", "SHUTDOWN_GRACE_S", "PORTS_FILE",
    "BUNDLE_DIR", "DEVICE_MODEL_DIR", "VALUE_MODEL_DIR", "SHIFT_DETECTOR_DIR", "RELEASE_PUBLIC_KEY",
    "INTEREST_ENCODER_DIR",
    "RELEASE_PUBLIC_KEY_FILE", "ALLOW_UNSIGNED", "MODEL_POLL_S",
    "ONNX_THREADS", "BLAS_THREADS", "PURCHASE_WEIGHT",
    "N_EMBEDDING", "N_COOCCURRENCE", "N_POPULAR",
    "REDIS_URL", "KEY_PREFIX", "REDIS_SOCKET_TIMEOUT_S", "REDIS_RETRIES", "REDIS_OPEN_CIRCUIT_S",
    "SESSION_TTL_S", "EVENTS_STREAM_MAXLEN", "EVENTS_BATCH_TTL_S", "REDIS_CLUSTER",
    "BUDGET_RATE", "BUDGET_BURST", "BUDGET_LOCAL_SHARE",
    "GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CLIENT_CA_FILE", "HTTP_TLS_CERT_FILE",
    "HTTP_TLS_KEY_FILE", "AUTH_KEYS", "AUTH_CLOCK_SKEW_S", "AUTH_MAX_TOKEN_LIFETIME_S",
    "AUTH_ACCEPT_LEGACY",
    "AUTH_SECRET", "MAX_K", "MAX_RECENT", "MAX_EXCLUDE", "MAX_EVENTS", "SESSION_RECENT_LEN",
    "SESSION_SERVED_LEN", "EXCLUDE_SERVED",
    "DASHBOARD_AGENTS", "DASHBOARD_AGENT_TIMEOUT_S", "DASHBOARD_WINDOW_S",
    "FL_DEVICES_PER_ROUND", "FL_OVER_SELECT", "FL_QUORUM_SHARE", "FL_ROUND_S",
    "FL_STALENESS_BOUND", "FL_STALENESS_DECAY", "FL_MAX_ROWS", "FL_ALGORITHM", "FL_CLIP_NORM",
    "FL_CLIP_MEDIAN", "FL_MAX_CORRECTION", "FL_MIN_CONTRIBUTORS", "FL_TRIM",
    "FL_MIN_CONTRIBUTOR_SHARE", "FL_MAX_ROW_STEP",
    "FL_ROW_AGGREGATOR", "FL_MAX_SAMPLES", "FL_MAX_ROW_NORM", "FL_MAX_UPDATE_NORM",
    "FL_CLIP_ROW_MEDIAN", "FL_LAAVG_MAX_AGE", "FL_CONTRIB_MODE", "FL_EXCLUDE_LOW_CONTRIB",
    "FL_SECURE_AGGREGATION", "FL_SECAGG_PHASE_S", "FL_SECAGG_ROW_CLIP", "FL_SECAGG_DENSE_CLIP",
    "FL_SECAGG_COUNT_CAP", "FL_SECAGG_SAMPLE_CAP",
    "AGGREGATOR_NAME", "AGGREGATOR_HEARTBEAT",
}  # fmt: skip
DEVICE_VARIABLES = {
    "HOST", "HTTP_PORT", "PORTS_FILE", "AGENT_ID", "TOKEN_SECRET", "MAX_DEVICES", "MAX_EVENTS",
    "APP_SECRET", "APP_KID", "APP_MAX_TOKEN_LIFETIME_S", "OPS_TOKEN", "MAX_BODY_BYTES",
    "TOKEN_KID", "TOKEN_LIFETIME_S", "HTTP_TLS_CERT_FILE", "HTTP_TLS_KEY_FILE",
    "CLOUD_TLS", "CLOUD_CA_FILE", "CLOUD_TLS_SERVER_NAME", "CLOUD_CERT_FILE", "CLOUD_KEY_FILE",
    "CLOUD_TARGET", "CLOUD_DEADLINE_MS", "RELEASE_PUBLIC_KEY", "RELEASE_PUBLIC_KEY_FILE",
    "ALLOW_UNSIGNED", "ONNX_THREADS", "MODEL_POLL_S",
    "POOL_SIZE", "MAX_POOL_SIZE", "PAGE_SIZE", "N_CATEGORIES", "BEHAVIOR_LEN", "MAX_K",
    "PRIVATE_RECOMMEND",
    "POLICY", "REQUEST_BUDGET", "PACER_ETA", "PACER_BURST", "PACER_BACKOFF", "INITIAL_THRESHOLD",
    "EXPLORATION", "EXPLORATION_ASK_PROB",
    "EVENTS_FORWARD", "EVENTS_BATCH", "EVENTS_QUEUE", "EVENTS_INTERVAL_MS", "EVENTS_DEADLINE_MS",
    "EVENTS_RETRY_MAX_S",
    "TRAIN", "TRAIN_INTERVAL_S", "TRAIN_MIN_EXAMPLES", "TRAIN_EXAMPLES_KEPT", "TRAIN_EPOCHS",
    "TRAIN_LR", "TRAIN_OPTIMIZER", "TRAIN_KEEP_PROB", "TRAIN_DECOY_PROB", "TRAIN_TIMEOUT_S",
    "TRAIN_PRIVACY_DIR", "TRAIN_PUBLIC_POOL_FILE", "TRAIN_PUBLIC_POOL_SIZE",
}  # fmt: skip


def test_the_variable_names_are_the_published_ones() -> None:
    assert set(env_names(CloudSettings)) == {f"CLOUD_{v}" for v in CLOUD_VARIABLES}
    assert set(env_names(DeviceSettings)) == {f"DEVICE_{v}" for v in DEVICE_VARIABLES}


def test_each_group_reads_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "CLOUD_FL_ROUND_S": "7", "CLOUD_DASHBOARD_WINDOW_S": "9", "CLOUD_AGGREGATOR_NAME": "agg-3",
        "CLOUD_BUDGET_RATE": "11", "CLOUD_REDIS_URL": "redis://r:1/0", "CLOUD_GRPC_PORT": "0",
        "DEVICE_TRAIN": "true", "DEVICE_TRAIN_LR": "0.25", "DEVICE_CLOUD_TARGET": "c:1",
        "DEVICE_REQUEST_BUDGET": "0.3",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    cloud, device = load_cloud(), load_device()
    assert (cloud.federated.round_s, cloud.dashboard.window_s) == (7.0, 9.0)
    assert (cloud.aggregator.name, cloud.budget.rate) == ("agg-3", 11.0)
    assert (cloud.store.redis_url, cloud.transport.grpc_port) == ("redis://r:1/0", 0)
    assert device.trainer.enabled and device.trainer.lr == 0.25
    assert (device.cloud.target, device.pacing.request_budget) == ("c:1", 0.3)
    assert CloudSettings() == cloud  # the same, built directly


def test_bad_variables_are_all_named_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLOUD_FL_ROUND_S", "-1")
    monkeypatch.setenv("CLOUD_GRPC_PORT", "not-a-port")
    monkeypatch.setenv("CLOUD_DASHBOARD_AGENTS", "[not json")
    with pytest.raises(SystemExit) as exit_:
        load_cloud()
    assert exit_.value.code == EXIT_BAD_SETTINGS
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "invalid CLOUD_* settings:"
    assert any(line.startswith("  CLOUD_FL_ROUND_S='-1': ") for line in err)
    assert any(line.startswith("  CLOUD_GRPC_PORT='not-a-port': ") for line in err)
    assert any(line.startswith("  CLOUD_DASHBOARD_AGENTS: not valid JSON") for line in err)


def test_the_switch_of_training_is_named_as_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEVICE_TRAIN", "maybe")
    with pytest.raises(SystemExit):
        load_device()
    assert "  DEVICE_TRAIN='maybe': " in capsys.readouterr().err


class Secretive(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="X_")
    secret: SecretStr = Field(SecretStr("long enough"), min_length=8)


def test_a_bad_secret_is_named_but_not_echoed() -> None:
    with pytest.raises(ValidationError) as err:
        Secretive(secret="hunter2")  # type: ignore[arg-type]
    line = describe(Secretive, err.value.errors()[0])
    assert line.startswith("  X_SECRET: ") and "hunter2" not in line


def test_secure_aggregation_refuses_rules_that_need_one_devices_update() -> None:
    from cloud_service.settings import FederatedSettings

    assert FederatedSettings(secure_aggregation=True).secure_aggregation  # the defaults hold
    for bad in ({"trim": 0.1}, {"row_aggregator": "median"}, {"algorithm": "fedlaavg"},
                {"exclude_low_contrib": 0.1}):  # fmt: skip
        with pytest.raises(ValueError, match="secure aggregation hides"):
            FederatedSettings(secure_aggregation=True, **bad)


def test_neither_process_has_a_default_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (
        "CLOUD_AUTH_SECRET",
        "CLOUD_AUTH_KEYS",
        "DEVICE_TOKEN_SECRET",
        "DEVICE_APP_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MissingAuthKey, match="CLOUD_AUTH_SECRET"):
        build_auth(load_cloud().requests)  # the serving replica refuses; jobs need no key
    with pytest.raises(SystemExit):
        load_device()
    err = capsys.readouterr().err
    assert "  DEVICE_TOKEN_SECRET: Field required" in err
    assert "  DEVICE_APP_SECRET: Field required" in err


def test_the_app_key_must_differ_from_the_fleet_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEVICE_TOKEN_SECRET", "one-key-for-both-0123")
    monkeypatch.setenv("DEVICE_APP_SECRET", "one-key-for-both-0123")
    with pytest.raises(SystemExit):
        load_device()
    err = capsys.readouterr().err
    assert "must differ from DEVICE_TOKEN_SECRET" in err and "one-key-for-both" not in err
