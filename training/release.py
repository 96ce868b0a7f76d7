"""`python -m training.release`: the release key and the registry's `current` pointers.

    keygen   --out DIR                       release.key (private, 0600) + release.pub
    publish  --registry DIR --kind K --from VERSION_DIR [--key FILE] [--no-promote]
             a version directory a writer produced into the kind's registry (signed by the
             writer, or here with the release key)
    value-model --registry DIR --onnx FILE [--key FILE]
             a request-value ONNX file as a signed value_model version (made current)
    shift-detector --registry DIR --onnx FILE [--key FILE]
             a shift-detector ONNX file as a signed shift_detector version (made current)
    promote  --registry DIR --kind K --version V    current → V
    rollback --registry DIR --kind K [--to V]       current → V, or the previous one
    list     --registry DIR --kind K                versions, current, history

The private key stays where training and publishing run: `--key` or `TANDEM_RELEASE_KEY_FILE`.
Serving processes hold only the public key (`CLOUD_RELEASE_PUBLIC_KEY[_FILE]`,
`DEVICE_RELEASE_PUBLIC_KEY[_FILE]`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tandem_core.artifacts import read_manifest, sha256_file, write_manifest
from tandem_core.release import (
    KINDS,
    SHIFT_DETECTOR,
    VALUE_MODEL,
    current_version,
    history,
    publish,
    release_manifest,
    rollback,
    set_current,
    versions,
)
from tandem_core.signing import Signer, generate_keypair, parse_public_key, public_key_text

KEY_ENV = "TANDEM_RELEASE_KEY_FILE"
PRIVATE = "release.key"
PUBLIC = "release.pub"
VALUE_ONNX = "request_value.onnx"
SHIFT_ONNX = "shift_detector.onnx"
ONNX_KINDS = {VALUE_MODEL: (VALUE_ONNX, "value-"), SHIFT_DETECTOR: (SHIFT_ONNX, "shift-")}


def keygen(out: Path) -> tuple[Path, Path]:
    """A new release key pair in `out`; refuses to overwrite one."""
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / PRIVATE, out / PUBLIC
    if private.exists():
        raise FileExistsError(f"{private} exists: a release key is never overwritten")
    private_pem, public_pem = generate_keypair()
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public.write_bytes(public_pem)
    return private, public


def ensure_dev_key(out: Path) -> tuple[Signer, Path]:
    """The key pair in `out`, made when missing (demo and tests; a deployment runs keygen)."""
    if not (out / PRIVATE).exists():
        keygen(out)
    return Signer.from_file(out / PRIVATE), out / PUBLIC


def signer_from(path: Path | None) -> Signer | None:
    """The release key named by `path` or TANDEM_RELEASE_KEY_FILE; None writes unsigned."""
    chosen = path or (Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV) else None)
    return Signer.from_file(chosen) if chosen is not None else None


def write_value_artifact(
    out: Path,
    onnx_file: Path,
    signer: Signer | None,
    extra: dict[str, object] | None = None,
    kind: str = VALUE_MODEL,
) -> dict[str, object]:
    """A session-feature ONNX file (request-value model or shift detector: ONNX_KINDS) as a
    version directory `out` (new) with its manifest."""
    name, prefix = ONNX_KINDS[kind]
    out.mkdir(parents=True, exist_ok=False)
    shutil.copyfile(onnx_file, out / name)
    digest = sha256_file(out / name)
    manifest: dict[str, object] = {
        "version": prefix + digest[:12],
        "file": name,
        "sha256": {name: digest},
        "embedding_version": "",  # session features only: no embedding rows
        **(extra or {}),
    }
    manifest = release_manifest(manifest, kind, signer)
    write_manifest(out, manifest)
    return manifest


def _release_staged(kind_dir: Path, write: Callable[[Path], str]) -> str:
    """Stage a version with `write` (returns its id), then add and promote it; a version
    already there (same id) is made current again instead of copied twice."""
    kind_dir.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".staged-", dir=kind_dir)) / "v"
    try:
        version = write(staged)
        if version in versions(kind_dir):
            set_current(kind_dir, version)
            return version
        return publish(kind_dir, staged)
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)


def release_value_model(
    kind_dir: Path,
    onnx_file: Path,
    signer: Signer | None,
    extra: dict[str, object] | None = None,
    kind: str = VALUE_MODEL,
) -> str:
    """Stage, add and promote a value model (or another ONNX_KINDS file; `extra`: manifest
    fields, e.g. its validation metrics); an identical one already there is made current."""
    return _release_staged(
        kind_dir,
        lambda staged: str(write_value_artifact(staged, onnx_file, signer, extra, kind)["version"]),
    )


def release_shift_detector(
    kind_dir: Path, onnx_file: Path, signer: Signer | None, extra: dict[str, object] | None = None
) -> str:
    """Stage, add and promote a shift detector (`python -m training.policy.detector` output)."""
    return release_value_model(kind_dir, onnx_file, signer, extra, SHIFT_DETECTOR)


def release_copy(kind_dir: Path, source: Path, kind: str, signer: Signer | None) -> str:
    """A writer's version directory copied into the kind's registry, its manifest (re)signed by
    `signer`, and made current; a version already there (same id) is made current again."""

    def write(staged: Path) -> str:
        shutil.copytree(source, staged, symlinks=True)
        manifest = release_manifest(read_manifest(staged), kind, signer)
        write_manifest(staged, manifest)
        return str(manifest["version"])

    return _release_staged(kind_dir, write)


def release_signer(key_file: Path | None, fallback_dir: Path) -> tuple[Signer, Path]:
    """The signer the models job uses and the public key file to hand to serving processes.

    `key_file` (or TANDEM_RELEASE_KEY_FILE) names the release key, made there on first use
    (a deployment's key volume); without either, a development key in `fallback_dir`."""
    chosen = key_file or (Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV) else None)
    if chosen is None:
        return ensure_dev_key(fallback_dir)
    if not chosen.exists() and chosen.name == PRIVATE:
        keygen(chosen.parent)  # first run of a deployment: the key volume is empty
    signer = Signer.from_file(chosen)
    public = chosen.with_name(PUBLIC)
    if not public.exists():
        public.write_bytes(public_pem(signer))
    return signer, public


def public_pem(signer: Signer) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _list(kind_dir: Path) -> None:
    print(f"current: {current_version(kind_dir)}")
    print("versions:", *versions(kind_dir) or ["(none)"])
    print("history (oldest first):", *history(kind_dir) or ["(none)"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("keygen").add_argument("--out", type=Path, required=True)
    onnx_cmds = {"value-model": VALUE_MODEL, "shift-detector": SHIFT_DETECTOR}
    for name in ("publish", *onnx_cmds, "promote", "rollback", "list"):
        p = sub.add_parser(name)
        p.add_argument("--registry", type=Path, required=True, help="the registry root")
        if name not in onnx_cmds:
            p.add_argument("--kind", choices=KINDS, required=True)
        if name == "publish":
            p.add_argument("--from", dest="source", type=Path, required=True)
            p.add_argument("--no-promote", action="store_true")
        if name == "publish" or name in onnx_cmds:
            p.add_argument("--key", type=Path, default=None, help=f"release key (or ${KEY_ENV})")
        if name in onnx_cmds:
            p.add_argument("--onnx", type=Path, required=True)
        if name == "promote":
            p.add_argument("--version", required=True)
        if name == "rollback":
            p.add_argument("--to", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "keygen":
        private, public = keygen(a.out)
        key = parse_public_key(public.read_bytes())
        print(f"private key {private} (keep it where training runs)\npublic key {public}")
        print(f"public key as one line (…_RELEASE_PUBLIC_KEY): {public_key_text(key)}")
        return 0
    if a.cmd in onnx_cmds:
        kind = onnx_cmds[a.cmd]
        version = release_value_model(a.registry / kind, a.onnx, signer_from(a.key), kind=kind)
        print(f"{kind} {version} is current")
        return 0
    kind_dir = a.registry / a.kind
    if a.cmd == "publish":
        staged = Path(tempfile.mkdtemp(prefix=".staged-", dir=a.registry)) / "v"
        shutil.copytree(a.source, staged, symlinks=True)
        signer = signer_from(a.key)
        if signer is not None:  # sign (again) with the release key; else as the writer signed
            write_manifest(staged, release_manifest(read_manifest(staged), a.kind, signer))
        version = publish(kind_dir, staged, promote=not a.no_promote)
        shutil.rmtree(staged.parent, ignore_errors=True)
        print(f"{a.kind} {version} added" + ("" if a.no_promote else " and current"))
    elif a.cmd == "promote":
        set_current(kind_dir, a.version)
        print(f"{a.kind} current: {a.version}")
    elif a.cmd == "rollback":
        print(f"{a.kind} rolled back to {rollback(kind_dir, a.to)}")
    else:
        _list(kind_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
