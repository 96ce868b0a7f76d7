"""The device token of the contract, `v2.<kid>.<expiry>.<hmac>`: minting, parsing; metadata key."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TOKEN_HEADER = "x-device-token"  # gRPC metadata key and HTTP header (case-insensitive there)
VERSION = "v2"
DEFAULT_KID = "k0"  # the kid of CLOUD_AUTH_SECRET, the single-key form
APP_KID = "a0"  # the default kid of an agent's app key (DEVICE_APP_SECRET)
APP_HEADER = "authorization"  # apps → agent: `Authorization: Bearer <v2 token under the app key>`
DEFAULT_LIFETIME_S = 12 * 3600  # of tokens minted by `device_token` (tests, tools)
KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # no "." (the separator), safe to echo in errors
_TOKEN = re.compile(r"^v2\.([A-Za-z0-9_-]{1,32})\.([0-9]{1,12})\.([0-9a-f]{64})$")
_DOMAIN = b"tandem-device-token/v2"  # a v2 MAC never equals a legacy HMAC(secret, device id)


@dataclass(frozen=True)
class ParsedToken:
    kid: str
    expires_at: int  # Unix seconds
    mac: str  # hex


def token_mac(secret: bytes, device_id: str, kid: str, expires_at: int) -> str:
    """HMAC-SHA256 under key `kid` over the device id, the kid and the expiry, hex.

    Each field is length-prefixed, so no two field tuples share a message; the domain prefix
    keeps a v2 MAC from ever equalling a legacy HMAC(secret, device id). Whoever holds a key can
    mint tokens for any device: the cloud holds every key still accepted, the simulated fleet
    its issuing key."""
    msg = bytearray(_DOMAIN)
    for field in (device_id.encode(), kid.encode(), str(expires_at).encode()):
        msg += len(field).to_bytes(4, "big") + field
    return hmac.new(secret, bytes(msg), hashlib.sha256).hexdigest()


def mint_token(secret: bytes, device_id: str, kid: str, expires_at: int) -> str:
    """The token of `device_id` under key `kid`, valid until `expires_at` (Unix seconds)."""
    if not KID.fullmatch(kid):
        raise ValueError("a key id must be 1-32 characters of [A-Za-z0-9_-]")
    if not 0 <= expires_at < 10**12:
        raise ValueError("the expiry must be Unix seconds")
    return f"{VERSION}.{kid}.{expires_at}.{token_mac(secret, device_id, kid, expires_at)}"


def parse_token(token: str) -> ParsedToken | None:
    """The fields of a well-formed v2 token, or None (nothing about its validity yet)."""
    found = _TOKEN.fullmatch(token) if len(token) <= 128 else None
    if found is None:
        return None
    return ParsedToken(found.group(1), int(found.group(2)), found.group(3))


def token_problem(
    keys: Mapping[str, bytes],
    device_id: str,
    token: str,
    *,
    now: int,
    skew_s: int,
    max_lifetime_s: int,
    header: str = TOKEN_HEADER,
) -> str | None:
    """Why a v2 `token` does not open `device_id` under `keys` (kid → secret), or None if it does.

    Refused unless it is well formed, names a kid of `keys`, its MAC matches the device
    (constant-time) and `now` is within [expiry − max lifetime, expiry], widened by the skew. The
    reason names no secret and is safe to return to the caller."""
    parsed = parse_token(token)
    if parsed is None:
        return f"malformed {header} (expected v2.<kid>.<expiry>.<mac>)"
    key = keys.get(parsed.kid)
    if key is None:
        return f"{header} names an unknown key id {parsed.kid!r}"
    expected = token_mac(key, device_id, parsed.kid, parsed.expires_at)
    if not hmac.compare_digest(parsed.mac.encode(), expected.encode()):
        return f"{header} does not match device_id"
    if now > parsed.expires_at + skew_s:
        return f"{header} expired {now - parsed.expires_at} s ago"
    if parsed.expires_at > now + max_lifetime_s + skew_s:
        return f"{header} expires more than {max_lifetime_s} s from now"
    return None


def legacy_token(secret: bytes, device_id: str) -> str:
    """The token before v2: bare HMAC-SHA256(secret, device id), hex; never expires."""
    return hmac.new(secret, device_id.encode(), hashlib.sha256).hexdigest()


def device_token(
    secret: bytes,
    device_id: str,
    *,
    kid: str = DEFAULT_KID,
    lifetime_s: int = DEFAULT_LIFETIME_S,
    now: float | None = None,
) -> str:
    """A fresh token valid for `lifetime_s` from now (by default: kid k0, 12 hours)."""
    issued = int(time.time() if now is None else now)
    return mint_token(secret, device_id, kid, issued + lifetime_s)


class TokenMinter:
    """The device side: each device's token, minted once and re-minted before it expires.

    A token is refreshed once less than a quarter of its lifetime is left, so a call made with
    it still has that margin against the cloud's clock. At most `capacity` devices are kept
    (least recently used dropped; a dropped device simply gets a new token). Thread-safe."""

    def __init__(
        self,
        secret: bytes,
        kid: str = DEFAULT_KID,
        lifetime_s: int = 3600,
        *,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lifetime_s < 4:
            raise ValueError("a token lifetime must be at least 4 s")
        mint_token(secret, "", kid, 0)  # refuses a bad kid now rather than on the first call
        self._secret, self.kid, self.lifetime_s = secret, kid, lifetime_s
        self._refresh_before_s = lifetime_s // 4
        self._capacity, self._clock = capacity, clock
        self._tokens: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, device_id: str) -> str:
        now = int(self._clock())
        with self._lock:
            held = self._tokens.get(device_id)
            if held is not None and held[0] - now > self._refresh_before_s:
                self._tokens.move_to_end(device_id)
                return held[1]
            expires_at = now + self.lifetime_s
            token = mint_token(self._secret, device_id, self.kid, expires_at)
            self._tokens[device_id] = (expires_at, token)
            self._tokens.move_to_end(device_id)
            if len(self._tokens) > self._capacity:
                self._tokens.popitem(last=False)
            return token
