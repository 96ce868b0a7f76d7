"""The registry serves the current valid device model and keeps the old one if a version is bad."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cloud_service.registry.device_models import DeviceModelRegistry
from tandem_core.artifacts import write_manifest
from tandem_core.release import RERANKER, VERSIONS, release_manifest, set_current
from tandem_core.signing import Signer, Verifier, generate_keypair, parse_public_key

pytestmark = pytest.mark.unit


def keys(tmp_path: Path) -> tuple[Signer, Verifier]:
    private, public = generate_keypair()
    (tmp_path / "k").write_bytes(private)
    return Signer.from_file(tmp_path / "k"), Verifier(parse_public_key(public))


def publish(
    kind_dir: Path, data: bytes, version: str, signer: Signer | None, sha: str | None = None
) -> None:
    d = kind_dir / VERSIONS / version
    d.mkdir(parents=True)
    (d / "m.onnx").write_bytes(data)
    manifest = {"version": version, "file": "m.onnx", "embedding_version": "emb-1",
                "sha256": {"m.onnx": sha or hashlib.sha256(data).hexdigest()}}  # fmt: skip
    write_manifest(d, release_manifest(manifest, RERANKER, signer))
    set_current(kind_dir, version)


def test_new_versions_are_picked_up_and_bad_ones_refused(tmp_path: Path) -> None:
    signer, verifier = keys(tmp_path)
    kind_dir = tmp_path / "reranker"
    assert DeviceModelRegistry(RERANKER, kind_dir, verifier).current() is None  # none yet
    publish(kind_dir, b"model-one", "v1", signer)
    registry = DeviceModelRegistry(RERANKER, kind_dir, verifier)
    assert registry.current().version == "v1"  # type: ignore[union-attr]
    publish(kind_dir, b"model-two", "v2", signer)
    assert registry.current().onnx_model == b"model-two"  # type: ignore[union-attr]
    publish(kind_dir, b"tampered", "v3", signer, sha="0" * 64)
    publish(kind_dir, b"unsigned", "v4", None)
    current = registry.current()
    assert current is not None and current.version == "v2"
    assert current.sha256 == hashlib.sha256(b"model-two").hexdigest()


def test_a_reranker_for_other_embeddings_is_refused(tmp_path: Path) -> None:
    signer, verifier = keys(tmp_path)
    publish(tmp_path / "r", b"model", "v1", signer)
    registry = DeviceModelRegistry(RERANKER, tmp_path / "r", verifier, lambda: "emb-2")
    assert registry.current() is None


def test_a_bad_first_model_is_not_served(tmp_path: Path) -> None:
    signer, verifier = keys(tmp_path)
    publish(tmp_path / "r", b"x", "v1", signer, sha="0" * 64)
    assert DeviceModelRegistry(RERANKER, tmp_path / "r", verifier).current() is None
