"""Apps' bearer tokens on the agent's REST API: a token opens only its own device's session."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from protos.auth import parse_token, token_problem

SCHEME = "Bearer"
CLOCK_SKEW_S = 30


class AppUnauthorized(Exception):
    """The request's credentials do not open the session it names (HTTP 401)."""


def bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; refused when absent or malformed."""
    if not authorization:
        raise AppUnauthorized("missing Authorization: Bearer <app token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != SCHEME.lower() or not token.strip():
        raise AppUnauthorized("Authorization must be Bearer <app token>")
    return token.strip()


class AppAuth:
    """Checks app tokens: v2 tokens (protos/auth.py) of the device id under the app key.

    The agent holds the app key (DEVICE_APP_SECRET) and issues each app its device's token when
    it pairs; a simulated fleet derives them from the same key."""

    def __init__(
        self,
        secret: bytes,
        kid: str,
        max_lifetime_s: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the app secret must be at least 16 bytes")
        self._keys = {kid: secret}
        self.kid, self.max_lifetime_s, self._clock = kid, max_lifetime_s, clock

    def well_formed(self, authorization: str | None) -> str:
        """The bearer token if it parses as a v2 token (before the body names a device)."""
        token = bearer(authorization)
        if parse_token(token) is None:
            raise AppUnauthorized("malformed app token (expected v2.<kid>.<expiry>.<mac>)")
        return token

    def check(self, device_id: str, token: str) -> None:
        problem = token_problem(
            self._keys, device_id, token, now=int(self._clock()), skew_s=CLOCK_SKEW_S,
            max_lifetime_s=self.max_lifetime_s, header="app token",
        )  # fmt: skip
        if problem is not None:
            raise AppUnauthorized(problem)


class OpsAuth:
    """/metrics and /v1/status: open when no ops token is set, else `Bearer <ops token>`."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def check(self, authorization: str | None) -> None:
        if not self._token:
            return
        given = bearer(authorization).encode()
        if not hmac.compare_digest(given, self._token):
            raise AppUnauthorized("wrong ops token")
