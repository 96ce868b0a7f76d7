"""The registry serves the newest valid device model and keeps the old one when a file is bad."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cloud_service.registry.device_models import DeviceModelRegistry
from tandem_core.artifacts import ArtifactIntegrityError

pytestmark = pytest.mark.unit


def publish(directory: Path, data: bytes, version: str, sha: str | None = None) -> None:
    (directory / f"{version}.onnx").write_bytes(data)
    manifest = {"version": version, "file": f"{version}.onnx", "embedding_version": "emb-1",
                "sha256": sha or hashlib.sha256(data).hexdigest()}  # fmt: skip
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest))
    stat = path.stat()  # make the change visible even within one mtime tick
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_new_versions_are_picked_up_and_bad_ones_refused(tmp_path: Path) -> None:
    assert DeviceModelRegistry(tmp_path).current() is None  # nothing published yet
    publish(tmp_path, b"model-one", "v1")
    registry = DeviceModelRegistry(tmp_path)
    assert registry.current().version == "v1"
    publish(tmp_path, b"model-two", "v2")
    assert registry.current().onnx_model == b"model-two"
    publish(tmp_path, b"tampered", "v3", sha="0" * 64)
    current = registry.current()
    assert current.version == "v2" and current.sha256 == hashlib.sha256(b"model-two").hexdigest()


def test_a_bad_first_model_fails_start_up(tmp_path: Path) -> None:
    publish(tmp_path, b"x", "v1", sha="0" * 64)
    with pytest.raises(ArtifactIntegrityError):
        DeviceModelRegistry(tmp_path)
