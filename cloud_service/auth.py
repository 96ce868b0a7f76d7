"""Per-device tokens checked against the cloud's keyring: key id, MAC (constant-time), expiry."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Mapping

from cloud_service.errors import InvalidArgument, Unauthenticated
from protos.auth import (
    DEFAULT_KID,
    DEFAULT_LIFETIME_S,
    KID,
    TOKEN_HEADER,
    device_token,
    legacy_token,
    parse_token,
    token_problem,
)

__all__ = ["TOKEN_HEADER", "DeviceAuth", "check_device_id", "device_token", "parse_keyring"]
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # no braces: ids go inside Redis hash tags
LEGACY = re.compile(r"^[0-9a-f]{64}$")
MIN_SECRET_BYTES = 16


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID.fullmatch(device_id):  # not .match: "$" also matches before a final "\n"
        raise InvalidArgument("device_id must be 1-64 characters of [A-Za-z0-9_.:-]")
    return device_id


def parse_keyring(text: str) -> dict[str, bytes]:
    """`kid1:secret,kid0:oldsecret` → {kid: secret}, current key first; errors never echo a
    secret (a secret may hold ':' but not ',')."""
    keys: dict[str, bytes] = {}
    for n, entry in enumerate(text.split(","), start=1):
        kid, sep, secret = entry.partition(":")
        kid = kid.strip()  # "k1:a, k0:b" reads as k0; a secret is taken as it is
        if not sep or not KID.fullmatch(kid):
            raise ValueError(f"entry {n} is not <kid>:<secret> with a kid of [A-Za-z0-9_-]{{1,32}}")
        if kid in keys:
            raise ValueError(f"key id {kid!r} appears twice")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret of key id {kid!r} is shorter than 16 bytes")
        keys[kid] = secret.encode()
    return keys


class DeviceAuth:
    """Binds a request to the device it names: a token opens only its own device's state.

    `DeviceAuth(secret)` is the single-key form (kid k0); `keys` is the keyring, current key
    first, every one accepted. A token is refused unless it names a kid of the ring, its MAC
    matches the device, and now is within [expiry − max lifetime, expiry] widened by the skew.
    Legacy tokens (bare HMAC of the device id under any ring key) pass only with `accept_legacy`,
    a window for upgrading agents that minted them."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        keys: Mapping[str, bytes] | None = None,
        skew_s: int = 30,
        max_lifetime_s: int = 86_400,
        accept_legacy: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (secret is None) == (keys is None):
            raise ValueError("give either the auth secret or a keyring")
        ring = dict(keys) if keys is not None else {DEFAULT_KID: secret or b""}
        if not ring or any(len(k) < MIN_SECRET_BYTES for k in ring.values()):
            raise ValueError("the auth secret must be at least 16 bytes")
        if not all(KID.fullmatch(kid) for kid in ring):
            raise ValueError("a key id must be 1-32 characters of [A-Za-z0-9_-]")
        self._keys = ring
        self.current_kid = next(iter(ring))
        self.skew_s, self.max_lifetime_s, self.accept_legacy = skew_s, max_lifetime_s, accept_legacy
        self._clock = clock

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def describe(self) -> str:
        """For the start-up log: which keys, which limits, whether legacy tokens pass."""
        return (
            f"device tokens: key ids {', '.join(self.kids)} (current {self.current_kid}), "
            f"clock skew {self.skew_s} s, max lifetime {self.max_lifetime_s} s, "
            f"legacy tokens {'accepted' if self.accept_legacy else 'refused'}"
        )

    def token_for(self, device_id: str) -> str:
        """A token under the current key (tests and tools; devices mint their own)."""
        lifetime = min(DEFAULT_LIFETIME_S, self.max_lifetime_s)
        return device_token(
            self._keys[self.current_kid], device_id, kid=self.current_kid, lifetime_s=lifetime,
            now=self._clock(),
        )  # fmt: skip

    def verify(self, device_id: str, token: str | None) -> None:
        check_device_id(device_id)
        if not token:
            raise Unauthenticated(f"missing {TOKEN_HEADER}")
        if parse_token(token) is None:
            self._verify_legacy(device_id, token)
            return
        problem = token_problem(
            self._keys, device_id, token, now=int(self._clock()), skew_s=self.skew_s,
            max_lifetime_s=self.max_lifetime_s,
        )  # fmt: skip
        if problem is not None:
            raise Unauthenticated(problem)

    def _verify_legacy(self, device_id: str, token: str) -> None:
        if not LEGACY.fullmatch(token):
            raise Unauthenticated(f"malformed {TOKEN_HEADER} (expected v2.<kid>.<expiry>.<mac>)")
        if not self.accept_legacy:
            raise Unauthenticated(f"legacy {TOKEN_HEADER} refused: present a v2 token")
        matches = [
            hmac.compare_digest(token.encode(), legacy_token(key, device_id).encode())
            for key in self._keys.values()
        ]  # every key compared: the time does not say which one matched
        if not any(matches):
            raise Unauthenticated(f"{TOKEN_HEADER} does not match device_id")
