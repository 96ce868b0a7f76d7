"""Ed25519 release signatures over a manifest: keys, the canonical bytes, sign and verify.

A manifest names every file's sha256, so signing its canonical form (sorted keys, no spaces,
the `signature` entry left out) signs the files too. The sha256 alone catches corruption; the
signature says the release key made it. Serving processes hold only the public key
(`Verifier`); the private key lives where training and publishing run (`Signer`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tandem_core.artifacts import ArtifactIntegrityError

log = logging.getLogger(__name__)

SIGNATURE = "signature"  # the manifest entry the signature travels in
ALGORITHM = "ed25519"


class SignatureError(ArtifactIntegrityError):
    """A manifest is unsigned, signed by another key, or changed after signing."""


class ReleaseKeyError(ValueError):
    """A key file or key text cannot be read as an Ed25519 key."""


def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest without its signature, keys sorted."""
    body = {k: v for k, v in manifest.items() if k != SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short name of a public key (sha256 of its raw bytes), recorded beside each signature."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def generate_keypair() -> tuple[bytes, bytes]:
    """(private key PEM, public key PEM) of a new release key."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def parse_public_key(text: str | bytes) -> Ed25519PublicKey:
    """A public key from PEM, or from the base64 of its 32 raw bytes (fits in one env var)."""
    data = text.encode() if isinstance(text, str) else text
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise ReleaseKeyError("the public key is not an Ed25519 key")
            return key
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except ReleaseKeyError:
        raise
    except ValueError as exc:
        raise ReleaseKeyError(f"not an Ed25519 public key: {exc}") from exc


def public_key_text(key: Ed25519PublicKey) -> str:
    """The base64 form `parse_public_key` reads (for `CLOUD_RELEASE_PUBLIC_KEY` and friends)."""
    return base64.b64encode(_raw_public(key)).decode()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ReleaseKeyError(f"cannot read the release key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseKeyError(f"{path} is not an Ed25519 private key")
    return key


@dataclass(frozen=True)
class Signer:
    """Signs manifests with the release key; only training and publishing hold one."""

    key: Ed25519PrivateKey

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        return cls(load_private_key(path))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def sign(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest with its `signature` entry (any previous one replaced)."""
        body = {k: v for k, v in manifest.items() if k != SIGNATURE}
        value = self.key.sign(canonical(body))
        body[SIGNATURE] = {
            "alg": ALGORITHM,
            "key_id": key_id(self.public_key),
            "value": base64.b64encode(value).decode(),
        }
        return body


@dataclass(frozen=True)
class Verifier:
    """Checks a manifest's signature against the one trusted public key.

    Without a key (`key=None`) a verifier exists only when the process was started with its
    explicit `..._ALLOW_UNSIGNED=true` development flag; it then accepts any manifest, and
    `signed` says so."""

    key: Ed25519PublicKey | None

    @property
    def signed(self) -> bool:
        return self.key is not None

    def verify(self, manifest: Mapping[str, Any]) -> None:
        if self.key is None:
            return
        sig = manifest.get(SIGNATURE)
        if not isinstance(sig, Mapping) or not isinstance(sig.get("value"), str):
            raise SignatureError("the manifest is not signed")
        if sig.get("alg") != ALGORITHM:
            raise SignatureError(f"unknown signature algorithm {sig.get('alg')!r}")
        try:
            value = base64.b64decode(sig["value"], validate=True)
            self.key.verify(value, canonical(manifest))
        except (InvalidSignature, ValueError) as exc:
            raise SignatureError(
                f"bad signature (key {sig.get('key_id')!r}, trusted {key_id(self.key)!r})"
            ) from exc


def build_verifier(key_text: str | None, key_file: Path | None, allow_unsigned: bool) -> Verifier:
    """The verifier a serving process's settings describe; without a key, only when unsigned
    artifacts were explicitly allowed (a development flag), else a ReleaseKeyError."""
    if key_text and key_file is not None:
        raise ReleaseKeyError("give the release public key or its file, not both")
    if key_file is not None:
        try:
            key_text = Path(key_file).read_text()
        except OSError as exc:
            raise ReleaseKeyError(f"cannot read the release public key {key_file}: {exc}") from exc
    if key_text:
        return Verifier(parse_public_key(key_text))
    if allow_unsigned:
        return Verifier(None)
    raise ReleaseKeyError(
        "no release public key: set ..._RELEASE_PUBLIC_KEY or ..._RELEASE_PUBLIC_KEY_FILE "
        "(or ..._ALLOW_UNSIGNED=true for development only)"
    )


def release_verifier(
    key_text: str | None, key_file: Path | None, allow_unsigned: bool, flag: str
) -> Verifier:
    """`build_verifier` for a process's start-up, with one warning (naming its `flag`) when it
    runs on unsigned artifacts."""
    verifier = build_verifier(key_text, key_file, allow_unsigned)
    if not verifier.signed:
        log.warning("%s: accepting unsigned artifacts (development only)", flag)
    return verifier
