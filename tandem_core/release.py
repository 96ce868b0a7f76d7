"""The release registry on disk: immutable versions per artifact kind, a `current` pointer, history.

```
<kind dir>/                      e.g. registry/reranker
  versions/<version>/            immutable: the files + manifest.json (signed, sha256 per file)
  current                        the served version's id, replaced atomically (os.replace)
  history                        one line per move of `current` (time, version), oldest first
```

A serving path may also name one version directory itself (a fixed version, no hot swap); it
is checked the same way. `load_verified` is the one reader: signature, kind, then every file
the manifest names, confined to the version directory, against its sha256.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem_core.artifacts import (
    MANIFEST,
    ArtifactIntegrityError,
    read_manifest,
    sha256_bytes,
    write_atomic,
)
from tandem_core.signing import Signer, Verifier

RERANKER = "reranker"
VALUE_MODEL = "value_model"
SHIFT_DETECTOR = "shift_detector"  # reserved: no artifact ships it yet
INTEREST_ENCODER = "interest_encoder"  # the private Recommend's on-device encoder
RANKER_BUNDLE = "ranker_bundle"
FEDERATED_BUNDLE = "federated_bundle"
KINDS = (RERANKER, VALUE_MODEL, SHIFT_DETECTOR, INTEREST_ENCODER, RANKER_BUNDLE, FEDERATED_BUNDLE)
DEVICE_KINDS = (RERANKER, VALUE_MODEL, SHIFT_DETECTOR, INTEREST_ENCODER)
BUNDLE_KINDS = (RANKER_BUNDLE, FEDERATED_BUNDLE)

CURRENT = "current"
VERSIONS = "versions"
HISTORY = "history"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to)."""


def check_version(version: str) -> str:
    if not _VERSION.fullmatch(version):
        raise ArtifactIntegrityError(f"bad version id {version!r}")
    return version


def confined(directory: Path, name: str) -> Path:
    """`directory/name` when it stays inside `directory` (no absolute path, no `..`, no symlink
    leading out); an ArtifactIntegrityError otherwise."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise ArtifactIntegrityError(f"bad file name {name!r} in the manifest")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ArtifactIntegrityError(f"file {name!r} leaves the version directory")
    root = Path(directory).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or path == root:
        raise ArtifactIntegrityError(f"file {name!r} leads outside the version directory")
    return path


def is_registry(path: Path) -> bool:
    """Whether `path` is a kind directory (has `current` or `versions/`)."""
    path = Path(path)
    return (path / CURRENT).exists() or (path / VERSIONS).is_dir()


def current_version(kind_dir: Path) -> str | None:
    try:
        text = (Path(kind_dir) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    return check_version(text) if text else None


def version_dir(kind_dir: Path, version: str) -> Path:
    return Path(kind_dir) / VERSIONS / check_version(version)


def resolve(path: Path) -> Path:
    """The version directory a serving path names: `current` of a kind directory, or the
    directory itself when it holds a manifest (the plain layout)."""
    path = Path(path)
    if not is_registry(path):
        return path
    version = current_version(path)
    if version is None:
        raise ArtifactIntegrityError(f"{path} has no current version")
    return version_dir(path, version)


def versions(kind_dir: Path) -> list[str]:
    root = Path(kind_dir) / VERSIONS
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def history(kind_dir: Path) -> list[str]:
    """The versions `current` was moved to, oldest first."""
    try:
        lines = (Path(kind_dir) / HISTORY).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.split()[-1] for line in lines if line.strip()]


def set_current(kind_dir: Path, version: str) -> None:
    """Point `current` at an existing version (one os.replace) and record it in the history."""
    kind_dir = Path(kind_dir)
    if not (version_dir(kind_dir, version) / MANIFEST).is_file():
        raise RegistryError(f"{kind_dir} has no version {version!r}")
    write_atomic(kind_dir / CURRENT, version + "\n")
    with (kind_dir / HISTORY).open("a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {version}\n")


def add_version(kind_dir: Path, staged: Path) -> str:
    """Move a complete staged directory in as `versions/<its manifest's version>`; never
    overwrites a version (they are immutable). Returns the version id."""
    version = check_version(str(read_manifest(staged)["version"]))
    target = version_dir(kind_dir, version)
    if target.exists():
        raise RegistryError(f"{target} exists: versions are immutable")
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(staged).rename(target)
    return version


def rollback(kind_dir: Path, to: str | None = None) -> str:
    """Move `current` to `to`, or to the version before the current one in the history."""
    if to is None:
        past = history(kind_dir)
        now = current_version(kind_dir)
        earlier = [v for v in past[:-1] if v != now] if past and past[-1] == now else past
        if not earlier:
            raise RegistryError(f"{kind_dir}: no earlier version to roll back to")
        to = earlier[-1]
    set_current(kind_dir, to)
    return to


@dataclass(frozen=True)
class VerifiedArtifact:
    """One version that passed every check; `files` are the verified bytes by name."""

    directory: Path
    manifest: Mapping[str, Any]
    files: Mapping[str, bytes]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def embedding_version(self) -> str:
        return str(self.manifest.get("embedding_version", ""))


def file_digests(manifest: Mapping[str, Any]) -> dict[str, str]:
    digests = manifest.get("sha256")
    if isinstance(digests, str) and isinstance(manifest.get("file"), str):
        digests = {manifest["file"]: digests}  # a device manifest written before the registry
    if not isinstance(digests, Mapping) or not digests:
        raise ArtifactIntegrityError("the manifest names no files (sha256 per file)")
    return {str(k): str(v) for k, v in digests.items()}


def check_manifest(
    manifest: Mapping[str, Any], verifier: Verifier, kinds: Iterable[str] | None = None
) -> None:
    """Signature first (nothing else of an unsigned manifest is trusted), then kind and version."""
    verifier.verify(manifest)
    kinds = tuple(kinds or ())
    # an unsigned manifest from before the registry has no kind: accepted only in development
    checked = verifier.signed or "kind" in manifest
    if kinds and checked and manifest.get("kind") not in kinds:
        raise ArtifactIntegrityError(f"kind {manifest.get('kind')!r} is not one of {kinds}")
    check_version(str(manifest.get("version", "")))


def load_verified(
    path: Path, verifier: Verifier, kinds: Iterable[str] | None = None
) -> VerifiedArtifact:
    """The version `path` names (kind dir or version dir), read and checked whole."""
    directory = resolve(path)
    manifest = read_manifest(directory)
    check_manifest(manifest, verifier, kinds)
    files: dict[str, bytes] = {}
    for name, digest in file_digests(manifest).items():
        target = confined(directory, name)
        try:
            data = target.read_bytes()
        except OSError as exc:
            raise ArtifactIntegrityError(f"cannot read {name!r}: {exc}") from exc
        if sha256_bytes(data) != digest:
            raise ArtifactIntegrityError(f"{directory / name} does not match its sha256")
        files[name] = data
    return VerifiedArtifact(directory, manifest, files)


def release_manifest(
    manifest: Mapping[str, Any], kind: str, signer: Signer | None
) -> dict[str, Any]:
    """A writer's manifest as released: its kind recorded, signed when a release key is given
    (an unsigned one is served only by processes started with `..._ALLOW_UNSIGNED=true`)."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    body = {**manifest, "kind": kind}
    return signer.sign(body) if signer is not None else body


def publish(kind_dir: Path, staged: Path, promote: bool = True) -> str:
    """Add a complete version directory to a kind's registry and (by default) make it current."""
    version = add_version(kind_dir, staged)
    if promote:
        set_current(kind_dir, version)
    return version
