"""Environment of the cloud and the device agents when they run as local child processes."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from localrun.run_secrets import APP_SECRET
from simulator.world import WorldConfig


class ModelFiles(Protocol):
    @property
    def bundle(self) -> Path: ...
    @property
    def device(self) -> Path: ...
    @property
    def value_model(self) -> Path | None: ...
    @property
    def world(self) -> WorldConfig: ...
    @property
    def public_key(self) -> Path | None: ...


def cloud_env(
    models: ModelFiles, redis_url: str, secret: str, cloud_rate: float, prefix: str
) -> dict[str, str]:
    env = {
        "CLOUD_REDIS_URL": redis_url, "CLOUD_GRPC_PORT": "0", "CLOUD_HTTP_PORT": "0",
        "CLOUD_BUNDLE_DIR": str(models.bundle), "CLOUD_DEVICE_MODEL_DIR": str(models.device),
        "CLOUD_AUTH_SECRET": secret, "CLOUD_BUDGET_RATE": str(cloud_rate),
        "CLOUD_BUDGET_BURST": str(cloud_rate), "CLOUD_KEY_PREFIX": prefix,
        **release_env("CLOUD_", models),
    }  # fmt: skip
    if models.value_model is not None:  # the registry serves it to the agents
        env["CLOUD_VALUE_MODEL_DIR"] = str(models.value_model)
    return env


def release_env(prefix: str, models: ModelFiles) -> dict[str, str]:
    """The public key models are signed by; without one (hand-made plain directories) the
    processes are told explicitly to accept unsigned artifacts."""
    if models.public_key is None:
        return {f"{prefix}ALLOW_UNSIGNED": "true"}
    return {f"{prefix}RELEASE_PUBLIC_KEY_FILE": str(models.public_key)}


def agent_env(
    models: ModelFiles, cloud_grpc: int, secret: str, policy: str, name: str, budget: float
) -> dict[str, str]:
    env = {
        "DEVICE_CLOUD_TARGET": f"127.0.0.1:{cloud_grpc}", "DEVICE_HTTP_PORT": "0",
        "DEVICE_TOKEN_SECRET": secret, "DEVICE_APP_SECRET": APP_SECRET,
        "DEVICE_POLICY": policy, "DEVICE_AGENT_ID": name,
        "DEVICE_REQUEST_BUDGET": str(budget),
        "DEVICE_N_CATEGORIES": str(models.world.n_categories),
        "DEVICE_PAGE_SIZE": str(models.world.page_size),
        "DEVICE_POOL_SIZE": str(models.world.pool_size),
        **release_env("DEVICE_", models),
    }  # fmt: skip
    return env
