"""Each device's index privacy: its memo key, its pool and its ledger, kept across restarts.

The pulled id set is padded by permanent randomized response (tandem_core/federated/privacy.py,
RAPPOR-style): a per-device secret key (32 random bytes, never sent) fixes each pool item's bit
at its first release, so repeated pulls repeat themselves instead of averaging the noise away.

The pool is public to the cloud: the items it sent this device ∪ the public pool every device
shares (the operator's list, e.g. the bundle's most clicked items, or the whole catalogue when it
is small). A true id outside the pool is never pulled — alone, it would be revealed outright —
so it is left out of training and counted (`withheld_outside_pool`), as is a true id whose bit
was fixed as "not pulled" (`withheld_fixed`).

With a directory, each device has `<h>.key` (the raw key, owner-only) and `<h>.json` (its
ledger: fixed bits and spend, with the key's fingerprint), `h` a hash of the device id. A ledger
whose key is gone or does not match is re-keyed and the re-keying counted; a key whose ledger is
gone is replaced too (its fixed bits are unknown) and the ledger marked `history_lost`. Without
a directory everything lives in memory and an agent restart re-keys every device unrecorded:
`/v1/status` says `persisted: false`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.trainer.examples import LocalExamples
from tandem_core.federated.accountant import IndexLedger, fleet_summary
from tandem_core.federated.privacy import epsilon, permanent_pad

log = logging.getLogger(__name__)
KEY_BYTES = 32
STATUS_DEVICES = 50  # devices listed one by one in /v1/status (the fleet totals cover all)


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(b"tandem/index-rr/fingerprint:" + key).hexdigest()[:16]


def load_public_pool(path: Path | None, size: int) -> np.ndarray:
    """The public pool: the first `size` ids of the file (one a line; all of them when size is
    0), or without a file the catalogue ids 0..size−1. ValueError on a malformed file."""
    if path is None:
        return np.arange(size, dtype=np.int64)
    lines = [line.strip() for line in path.read_text().splitlines()]
    try:
        ids = np.array([int(x) for x in lines if x], dtype=np.int64)
    except ValueError:
        raise ValueError(f"public pool {path}: one non-negative item id a line") from None
    if len(ids) and ids.min() < 0:
        raise ValueError(f"public pool {path}: item ids must be non-negative")
    return np.unique(ids[:size] if size else ids)


@dataclass(frozen=True)
class PaddedPull:
    ids: np.ndarray  # the set to pull, sorted
    pool_size: int
    new_releases: int  # items whose bit was fixed by this pull (each cost ε)
    outside_pool: int  # true ids left out: not in the pool
    withheld: int  # true ids left out: their bit is fixed as "not pulled"


class LedgerFiles:
    """The keys and ledgers of every device, one pair of files each, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _paths(self, device_id: str) -> tuple[Path, Path]:
        h = hashlib.sha256(device_id.encode()).hexdigest()[:32]  # any id is a safe file name
        return self.directory / f"{h}.key", self.directory / f"{h}.json"

    def load(self, device_id: str) -> tuple[bytes, IndexLedger]:
        """The device's key and ledger; a new pair (saved) when either is missing or unusable."""
        key_path, ledger_path = self._paths(device_id)
        key = key_path.read_bytes() if key_path.exists() else None
        key = key if key is not None and len(key) == KEY_BYTES else None
        stored = self._read_ledger(ledger_path, device_id)
        if key is not None and stored is not None and stored[0] == fingerprint(key):
            return key, stored[1]
        if stored is not None:  # the key is gone or is another one: new draws, counted
            ledger = stored[1]
            ledger.rekey()
            log.warning("index privacy: key of %s lost; re-keyed (epoch %d)", device_id,
                        ledger.key_epoch)  # fmt: skip
        elif key is not None:  # the ledger is gone: its fixed bits and spend are unknown
            ledger = IndexLedger(key_epoch=2, history_lost=True)
            log.warning("index privacy: ledger of %s lost; re-keyed, earlier spend unknown",
                        device_id)  # fmt: skip
        else:
            ledger = IndexLedger()
        key = secrets.token_bytes(KEY_BYTES)
        self.save(device_id, key, ledger, new_key=True)
        return key, ledger

    def _read_ledger(self, path: Path, device_id: str) -> tuple[str, IndexLedger] | None:
        if not path.exists():
            return None
        try:
            d = json.loads(path.read_text())
            if d.get("device_id") != device_id:
                raise ValueError("ledger of another device")
            return str(d["key_fingerprint"]), IndexLedger.from_json(d["ledger"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("index privacy: unreadable ledger %s (%s)", path, exc)
            return None

    def save(self, device_id: str, key: bytes, ledger: IndexLedger, new_key: bool = False) -> None:
        """Written atomically and synced before the pull it covers leaves the device."""
        key_path, ledger_path = self._paths(device_id)
        if new_key:
            _write_atomic(key_path, key)
        doc = {"device_id": device_id, "key_fingerprint": fingerprint(key),
               "ledger": ledger.to_json()}  # fmt: skip
        _write_atomic(ledger_path, json.dumps(doc).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class IndexPrivacy:
    """Every device's key and ledger (on disk when a directory is given) and the public pool.

    `key_source` makes the in-memory keys reproducible (the audit's seeded fleets); a device's
    keys are otherwise 32 bytes from `secrets`."""

    def __init__(
        self, directory: Path | None = None, public_pool: np.ndarray | None = None,
        key_source: Callable[[str, int], bytes] | None = None,
    ) -> None:  # fmt: skip
        self.files = LedgerFiles(directory) if directory is not None else None
        self.key_source = key_source
        self.public_pool = np.unique(np.asarray(
            public_pool if public_pool is not None else [], dtype=np.int64
        ))  # fmt: skip
        self._held: dict[str, tuple[bytes, IndexLedger]] = {}
        self._lock = threading.Lock()

    def _get(self, device_id: str) -> tuple[bytes, IndexLedger]:
        held = self._held.get(device_id)
        if held is None:
            if self.files is not None:
                held = self.files.load(device_id)
            else:
                held = (self._new_key(device_id, 1), IndexLedger())
            self._held[device_id] = held
        return held

    def _new_key(self, device_id: str, epoch: int) -> bytes:
        if self.key_source is not None and self.files is None:
            return self.key_source(device_id, epoch)
        return secrets.token_bytes(KEY_BYTES)

    def pad(
        self, device_id: str, true_ids: np.ndarray, sent: np.ndarray, keep_prob: float,
        decoy_prob: float,
    ) -> PaddedPull:  # fmt: skip
        """The device's padded pull over its pool (sent ∪ public), recorded before it is sent."""
        pool = np.union1d(np.asarray(sent, dtype=np.int64), self.public_pool)
        with self._lock:
            key, ledger = self._get(device_id)
            pull = permanent_pad(
                key, ledger.released, ledger.pulled, true_ids, pool, keep_prob, decoy_prob
            )
            ledger.record(pull, epsilon(keep_prob, decoy_prob))
            if self.files is not None:
                self.files.save(device_id, key, ledger)
        return PaddedPull(pull.ids, len(pool), len(pull.new_ids), pull.outside_pool, pull.withheld)

    def rekey(self, device_id: str) -> None:
        """A fresh key for the device (its items pay ε again when next released)."""
        with self._lock:
            _, ledger = self._get(device_id)
            ledger.rekey()
            key = self._new_key(device_id, ledger.key_epoch)
            self._held[device_id] = (key, ledger)
            if self.files is not None:
                self.files.save(device_id, key, ledger, new_key=True)

    def ledger(self, device_id: str) -> IndexLedger:
        with self._lock:
            return self._get(device_id)[1]

    def ledgers(self) -> dict[str, IndexLedger]:
        """The ledgers of every device held since start (loaded from disk on first use)."""
        with self._lock:
            return {d: held[1] for d, held in self._held.items()}

    def status(self, eps: float) -> dict[str, Any]:
        ledgers = self.ledgers()
        with self._lock:
            out = fleet_summary(ledgers, persisted=self.files is not None, eps=eps)
            out["public_pool_size"] = len(self.public_pool)
            worst = sorted(ledgers, key=lambda d: -ledgers[d].max_epsilon)[:STATUS_DEVICES]
            out["by_device"] = {d: ledgers[d].summary() for d in worst}
        return out


@dataclass(frozen=True)
class PrivacyConfig:
    """Padding of the pulled id set: p, q and the devices' memo and ledgers.

    keep_prob = 1 reports ε = ∞ (the padding then hides only the set's size)."""

    keep_prob: float = 0.9
    decoy_prob: float = 0.1
    index: IndexPrivacy = field(default_factory=IndexPrivacy, compare=False)

    def pad(self, device_id: str, ex: LocalExamples, sent: np.ndarray) -> PaddedPull:
        """The pull of the device's true ids and decoys over `sent` (what the cloud sent it)."""
        return self.index.pad(device_id, ex.true_ids(), sent, self.keep_prob, self.decoy_prob)

    def status(self) -> dict[str, Any]:
        return self.index.status(epsilon(self.keep_prob, self.decoy_prob))
