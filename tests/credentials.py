"""The test session's secrets: random per run, set in the environment by tests/conftest.py."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from localrun.app_tokens import AppTokens

TOKEN_SECRET = f"test-fleet-{secrets.token_hex(16)}"  # CLOUD_AUTH_SECRET = DEVICE_TOKEN_SECRET
APP_SECRET = f"test-apps-{secrets.token_hex(16)}"  # DEVICE_APP_SECRET
ENV = {
    "CLOUD_AUTH_SECRET": TOKEN_SECRET,
    "DEVICE_TOKEN_SECRET": TOKEN_SECRET,
    "DEVICE_APP_SECRET": APP_SECRET,
}
APP_TOKENS = AppTokens(APP_SECRET)


def app_post(url: str, **kwargs: Any) -> httpx.Response:
    """`httpx.post` to an agent, signed with the app token of the body's device_id."""
    kwargs.setdefault("timeout", 5.0)
    return httpx.post(url, auth=APP_TOKENS, **kwargs)
