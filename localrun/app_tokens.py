"""Apps' side of the agent's REST auth: each request signed with its device's app token."""

from __future__ import annotations

import json
from collections.abc import Generator

import httpx

from protos.auth import APP_KID, TokenMinter


class AppTokens(httpx.Auth):
    """`Authorization: Bearer <token>` for the device the JSON body names (the fleet's apps,
    which derive tokens from the agents' DEVICE_APP_SECRET; a real app is issued its own)."""

    requires_request_body = True

    def __init__(self, secret: str | bytes, kid: str = APP_KID, lifetime_s: int = 12 * 3600):
        key = secret.encode() if isinstance(secret, str) else secret
        self.minter = TokenMinter(key, kid, lifetime_s)

    def header(self, device_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.minter(device_id)}"}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        device = _device_of(request.content)
        if device is not None and "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {self.minter(device)}"
        yield request


def _device_of(content: bytes) -> str | None:
    try:
        body = json.loads(content) if content else None
    except ValueError:
        return None
    device = body.get("device_id") if isinstance(body, dict) else None
    return device if isinstance(device, str) else None
