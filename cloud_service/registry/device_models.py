"""Serves the current on-device ONNX model from the directory the device training command writes."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from tandem_core.artifacts import ArtifactIntegrityError, read_manifest, read_verified


@dataclass(frozen=True)
class DeviceModel:
    version: str
    sha256: str
    onnx_model: bytes
    embedding_version: str


class DeviceModelRegistry:
    """Reads `manifest.json` + the ONNX file it names; reloads when the manifest changes.

    A new model is published by writing the ONNX file first and the manifest last (as the
    training command does), so a reader never pairs a new manifest with an old file. A file
    that fails its sha256 check is refused and the previously loaded model stays current.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._mtime_ns = -1
        self._current: DeviceModel | None = None
        self.refresh()

    def refresh(self) -> DeviceModel | None:
        manifest_path = self.directory / "manifest.json"
        try:
            mtime = manifest_path.stat().st_mtime_ns
        except FileNotFoundError:
            return self._current
        with self._lock:
            if mtime == self._mtime_ns:
                return self._current
            try:
                self._current = self._load()
            except (ArtifactIntegrityError, KeyError, OSError):
                if self._current is None:
                    raise
            self._mtime_ns = mtime
            return self._current

    def _load(self) -> DeviceModel:
        manifest = read_manifest(self.directory)
        name = str(manifest["file"])
        data = read_verified(self.directory, name, {name: str(manifest["sha256"])})
        return DeviceModel(
            version=str(manifest["version"]),
            sha256=str(manifest["sha256"]),
            onnx_model=data,
            embedding_version=str(manifest.get("embedding_version", "")),
        )

    def current(self) -> DeviceModel | None:
        """The newest valid model, or None when none has been published yet."""
        return self.refresh()
