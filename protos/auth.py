"""The device token of the contract: HMAC-SHA256(server secret, device id), hex; metadata key."""

from __future__ import annotations

import hashlib
import hmac

TOKEN_HEADER = "x-device-token"  # gRPC metadata key and HTTP header (case-insensitive there)


def device_token(secret: bytes, device_id: str) -> str:
    """The token a device presents; issued at device registration by whoever holds the secret."""
    return hmac.new(secret, device_id.encode(), hashlib.sha256).hexdigest()
