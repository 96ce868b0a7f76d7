"""The artifact format every model directory shares: a manifest with sha256 per file, one writer.

A directory holds its files and `manifest.json`; the manifest names each file's sha256. Readers
check the hash before using a byte (`read_verified`); writers stage a whole directory in a
temporary sibling and rename it into place (`staged_dir`), or replace a manifest atomically
(`write_manifest`), so a reader never sees a new file beside an old manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
# the cloud ranker's serving bundle
RANKER_ONNX = "ranker.onnx"
TABLES = "tables.npz"
FEDERATED = "federated.npz"  # the starting point of federated training: rows + dense layers
BUNDLE_FILES = (RANKER_ONNX, TABLES, FEDERATED)
# the same ranker over behaviour rows (the private Recommend); only in a bundle whose shipped
# rows are the ranker's own embedding (training.ranker.bundle.write_bundle), else absent
PRIVATE_RANKER_ONNX = "private_ranker.onnx"


class ArtifactIntegrityError(RuntimeError):
    """A file does not match the sha256 its manifest records, or the manifest is unusable."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digests(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """{file name: sha256} of the named files of `directory`."""
    return {name: sha256_file(Path(directory) / name) for name in names}


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactIntegrityError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ArtifactIntegrityError(f"{path} is not a JSON object")
    return manifest


def read_verified(directory: Path, name: str, sha256: Mapping[str, str]) -> bytes:
    """The bytes of `directory/name` if they hash to `sha256[name]`."""
    path = Path(directory) / name
    data = path.read_bytes()
    if sha256_bytes(data) != sha256.get(name):
        raise ArtifactIntegrityError(f"{path} does not match its manifest's sha256")
    return data


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (a synced temporary sibling renamed over it),
    readable by every user like a plain write (mkstemp alone would leave it 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Write `manifest.json` atomically."""
    write_atomic(Path(directory) / MANIFEST, json.dumps(manifest, indent=2, default=list))


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A temporary sibling of `target` to write a whole artifact into; renamed to `target` when
    the block ends without error, removed otherwise. `target` must be new or empty."""
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty: write into a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700: readers under another uid must list it
    try:
        yield tmp
        if target.exists():
            target.rmdir()  # empty, checked above
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
