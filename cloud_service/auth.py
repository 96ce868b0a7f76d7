"""Per-device tokens: HMAC-SHA256(server secret, device id), constant-time checked."""

from __future__ import annotations

import hmac
import re

from cloud_service.errors import InvalidArgument, Unauthenticated
from protos.auth import TOKEN_HEADER, device_token

__all__ = ["TOKEN_HEADER", "DeviceAuth", "check_device_id", "device_token"]
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # no braces: ids go inside Redis hash tags


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID.match(device_id):
        raise InvalidArgument("device_id must be 1-64 characters of [A-Za-z0-9_.:-]")
    return device_id


class DeviceAuth:
    """Binds a request to the device it names: a token opens only its own device's state."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the auth secret must be at least 16 bytes")
        self._secret = secret

    def token_for(self, device_id: str) -> str:
        return device_token(self._secret, device_id)

    def verify(self, device_id: str, token: str | None) -> None:
        check_device_id(device_id)
        if not token:
            raise Unauthenticated(f"missing {TOKEN_HEADER}")
        if not hmac.compare_digest(token.encode(), self.token_for(device_id).encode()):
            raise Unauthenticated(f"{TOKEN_HEADER} does not match device_id")
