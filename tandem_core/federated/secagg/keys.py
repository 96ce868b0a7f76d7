"""X25519 key agreement (HKDF-SHA256) and the AES-GCM box that carries shares between devices.

The primitives Bonawitz et al. (CCS 2017, §4) name KA and AE, from `cryptography`. Every
ciphertext is bound to (round, sender, receiver) through the associated data, so a share
message replayed into another round or re-addressed by the server fails to open.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


class CryptoError(ValueError):
    """A public key or ciphertext that cannot be used; the message says which."""


def generate() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def private_bytes(private: X25519PrivateKey) -> bytes:
    return private.private_bytes_raw()


def private_from_bytes(data: bytes) -> X25519PrivateKey:
    if len(data) != KEY_BYTES:
        raise CryptoError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(data)}")
    return X25519PrivateKey.from_private_bytes(data)


def agree(private: X25519PrivateKey, peer_public_bytes: bytes, info: bytes) -> bytes:
    """A 32-byte key both ends derive: HKDF-SHA256 of the X25519 shared secret, bound to `info`.

    Refuses a peer key of the wrong length and a low-order point (an all-zero shared secret)."""
    if len(peer_public_bytes) != KEY_BYTES:
        raise CryptoError(
            f"an X25519 public key is {KEY_BYTES} bytes, got {len(peer_public_bytes)}"
        )
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public_bytes))
    except ValueError as exc:  # OpenSSL refuses a low-order peer point
        raise CryptoError(f"unusable peer public key ({exc})") from None
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
    return hkdf.derive(shared)


def associated_data(round_id: str, sender: str, receiver: str) -> bytes:
    """Length-prefixed round ‖ sender ‖ receiver (unambiguous: no two triples share an encoding)."""
    parts = [s.encode() for s in (round_id, sender, receiver)]
    return b"".join(struct.pack(">H", len(p)) + p for p in parts)


def encrypt(key: bytes, plaintext: bytes, round_id: str, sender: str, receiver: str) -> bytes:
    """nonce ‖ AES-256-GCM(plaintext) ‖ tag, with (round, sender, receiver) as associated data."""
    nonce = os.urandom(NONCE_BYTES)
    ad = associated_data(round_id, sender, receiver)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def decrypt(key: bytes, ciphertext: bytes, round_id: str, sender: str, receiver: str) -> bytes:
    """The plaintext, or CryptoError when the ciphertext was altered or is bound to another
    (round, sender, receiver)."""
    if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
        raise CryptoError("ciphertext too short")
    nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, associated_data(round_id, sender, receiver))
    except InvalidTag:
        raise CryptoError(f"share {sender} → {receiver} does not authenticate") from None
