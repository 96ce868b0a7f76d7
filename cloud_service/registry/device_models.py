"""Serves the on-device models (re-ranker, request-value model) from their registry directories.

Each kind has its own directory: a registry kind directory (`current` + `versions/`, followed
on every call) or one version directory (fixed). A version is served only after its signature,
kind, every sha256 and (for the re-ranker) its embedding version against the rows this replica
ships have passed; one that fails is refused, counted and logged, and the previous one stays.
The device checks the signed manifest again itself: it trusts only its own public key.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cloud_service import metrics
from tandem_core.artifacts import MANIFEST, ArtifactIntegrityError
from tandem_core.release import RERANKER, file_digests, load_verified, resolve
from tandem_core.signing import Verifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceModel:
    kind: str
    version: str
    sha256: str  # of the model file
    onnx_model: bytes
    embedding_version: str
    manifest: str  # the signed manifest as stored (JSON): the device verifies it itself


class DeviceModelRegistry:
    """One kind's current version; reloads when `current` (or the manifest) changes."""

    def __init__(
        self,
        kind: str,
        directory: Path,
        verifier: Verifier,
        embedding_version: Callable[[], str] = lambda: "",
    ) -> None:
        self.kind, self.directory, self.verifier = kind, Path(directory), verifier
        self.embedding_version = embedding_version  # what the replica ships; "" = no check
        self._lock = threading.Lock()
        self._seen: tuple[Path, int] | None = None
        self._current: DeviceModel | None = None
        self.refresh()

    def _stamp(self) -> tuple[Path, int] | None:
        try:
            where = resolve(self.directory)
            return where, (where / MANIFEST).stat().st_mtime_ns
        except (OSError, ArtifactIntegrityError):
            return None

    def refresh(self) -> DeviceModel | None:
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return self._current
        with self._lock:
            if stamp == self._seen:
                return self._current
            self._seen = stamp
            try:
                self._current = self._load()
                metrics.MODEL_LOADS.labels(self.kind, "installed").inc()
                log.info("serving %s %s", self.kind, self._current.version)
            except (ArtifactIntegrityError, KeyError, OSError, ValueError) as exc:
                metrics.MODEL_LOADS.labels(self.kind, "refused").inc()
                log.warning("refused %s at %s: %s", self.kind, stamp[0], exc)
            return self._current

    def _load(self) -> DeviceModel:
        art = load_verified(self.directory, self.verifier, (self.kind,))
        name = str(art.manifest["file"])
        expected = self.embedding_version()
        if self.kind == RERANKER and expected and art.embedding_version != expected:
            raise ArtifactIntegrityError(
                f"trained on embeddings {art.embedding_version!r}, this replica ships {expected!r}"
            )
        return DeviceModel(
            kind=self.kind,
            version=art.version,
            sha256=file_digests(art.manifest)[name],
            onnx_model=art.files[name],
            embedding_version=art.embedding_version,
            manifest=json.dumps(dict(art.manifest), sort_keys=True),
        )

    def current(self) -> DeviceModel | None:
        """The newest valid model, or None when none has been published (or passed) yet."""
        return self.refresh()


def build_registries(
    directories: Mapping[str, Path | None],
    verifier: Verifier,
    embedding_version: Callable[[], str],
) -> dict[str, DeviceModelRegistry]:
    """A registry per kind that has a directory configured."""
    return {
        kind: DeviceModelRegistry(kind, path, verifier, embedding_version)
        for kind, path in directories.items()
        if path is not None
    }
