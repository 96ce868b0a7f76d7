"""Release signatures and the registry layout: sign/verify, confinement, current, rollback, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem_core.artifacts import ArtifactIntegrityError, sha256_bytes, write_manifest
from tandem_core.release import (
    RERANKER,
    VERSIONS,
    RegistryError,
    confined,
    current_version,
    history,
    load_verified,
    publish,
    release_manifest,
    rollback,
    set_current,
)
from tandem_core.signing import (
    ReleaseKeyError,
    SignatureError,
    Signer,
    Verifier,
    build_verifier,
    canonical,
    generate_keypair,
    parse_public_key,
    public_key_text,
)
from training import release as release_cli

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    private, _ = generate_keypair()
    path = tmp_path_factory.mktemp("key") / "release.key"
    path.write_bytes(private)
    return Signer.from_file(path)


def version(kind_dir: Path, name: str, data: bytes, signer: Signer | None) -> str:
    staged = kind_dir.parent / f".staged-{name}"
    staged.mkdir(parents=True)
    (staged / "m.onnx").write_bytes(data)
    manifest = {"version": name, "file": "m.onnx", "sha256": {"m.onnx": sha256_bytes(data)}}
    write_manifest(staged, release_manifest(manifest, RERANKER, signer))
    return publish(kind_dir, staged)


scalars = st.one_of(st.integers(), st.text(max_size=8), st.booleans(), st.none())


@given(st.dictionaries(st.text(min_size=1, max_size=8), scalars, max_size=6))
def test_a_signature_covers_exactly_the_canonical_manifest(body: dict) -> None:
    private, public = generate_keypair()
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private, password=None)
    signed = Signer(key).sign(body)  # type: ignore[arg-type]
    verifier = Verifier(parse_public_key(public))
    verifier.verify(json.loads(json.dumps(signed)))  # survives a JSON round trip
    assert canonical(signed) == canonical(body)
    with pytest.raises(SignatureError):
        verifier.verify({**signed, "extra": 1})


def test_forged_unsigned_and_changed_manifests_are_refused(signer: Signer) -> None:
    other_private, _ = generate_keypair()
    from cryptography.hazmat.primitives import serialization

    other = Signer(serialization.load_pem_private_key(other_private, password=None))  # type: ignore[arg-type]
    verifier = Verifier(signer.public_key)
    body = {"version": "v1", "sha256": {"a": "00"}}
    verifier.verify(signer.sign(body))
    for bad in (other.sign(body), body, {**signer.sign(body), "sha256": {"a": "11"}}):
        with pytest.raises(SignatureError):
            verifier.verify(bad)
    Verifier(None).verify(body)  # development mode: anything goes (the flag says so)


def test_keys_from_pem_base64_or_file_and_no_default(signer: Signer, tmp_path: Path) -> None:
    text = public_key_text(signer.public_key)
    assert build_verifier(text, None, False).signed
    (tmp_path / "pub").write_text(text)
    assert build_verifier(None, tmp_path / "pub", False).signed
    with pytest.raises(ReleaseKeyError):
        build_verifier(None, None, False)  # no key and no explicit dev flag: refuse
    assert not build_verifier(None, None, True).signed
    with pytest.raises(ReleaseKeyError):
        build_verifier("not a key", None, False)


@pytest.mark.parametrize("name", ["/etc/hostname", "../x", "a/../../x", "", "a\\b"])
def test_paths_are_confined_to_the_version_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtifactIntegrityError):
        confined(tmp_path, name)


def test_a_symlink_out_of_the_version_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ArtifactIntegrityError):
        confined(tmp_path / "v", "link")
    assert confined(tmp_path / "v", "inside.onnx") == (tmp_path / "v" / "inside.onnx").resolve()


def test_current_history_and_rollback(tmp_path: Path, signer: Signer) -> None:
    kind_dir = tmp_path / RERANKER
    verifier = Verifier(signer.public_key)
    for i in (1, 2, 3):
        version(kind_dir, f"v{i}", f"model-{i}".encode(), signer)
    assert current_version(kind_dir) == "v3" and history(kind_dir) == ["v1", "v2", "v3"]
    assert load_verified(kind_dir, verifier, (RERANKER,)).files["m.onnx"] == b"model-3"
    assert rollback(kind_dir) == "v2" and current_version(kind_dir) == "v2"
    assert rollback(kind_dir, to="v3") == "v3"
    with pytest.raises(RegistryError):
        set_current(kind_dir, "v9")  # no such version
    with pytest.raises(RegistryError):
        version(kind_dir, "v1", b"again", signer)  # versions are immutable
    assert sorted(p.name for p in (kind_dir / VERSIONS).iterdir()) == ["v1", "v2", "v3"]


def test_the_release_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert release_cli.main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    assert (tmp_path / "keys" / "release.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        release_cli.main(["keygen", "--out", str(tmp_path / "keys")])  # never overwritten
    signer = Signer.from_file(tmp_path / "keys" / "release.key")
    reg = tmp_path / "registry"
    version(reg / RERANKER, "v1", b"one", signer)
    version(reg / RERANKER, "v2", b"two", signer)
    args = ["--registry", str(reg), "--kind", RERANKER]
    assert release_cli.main(["rollback", *args]) == 0
    assert current_version(reg / RERANKER) == "v1"
    assert release_cli.main(["promote", *args, "--version", "v2"]) == 0
    assert release_cli.main(["rollback", *args, "--to", "v1"]) == 0
    assert current_version(reg / RERANKER) == "v1"
    assert release_cli.main(["list", *args]) == 0
    assert "current: v1" in capsys.readouterr().out


def test_a_plain_directory_of_the_old_layout_is_served_only_unsigned_in_development(
    tmp_path: Path, signer: Signer
) -> None:
    (tmp_path / "m.onnx").write_bytes(b"old")
    old = {"version": "v0", "file": "m.onnx", "sha256": sha256_bytes(b"old")}  # no kind
    write_manifest(tmp_path, old)
    assert load_verified(tmp_path, Verifier(None), (RERANKER,)).files["m.onnx"] == b"old"
    with pytest.raises(SignatureError):
        load_verified(tmp_path, Verifier(signer.public_key), (RERANKER,))


def test_neither_process_starts_without_a_release_key_unless_told_to(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cloud_service.build import build_release_verifier as cloud_verifier
    from cloud_service.settings import ModelSettings as CloudModels
    from device_agent.build import build_release_verifier as agent_verifier
    from device_agent.settings import ModelSettings as DeviceModels

    for name in ("RELEASE_PUBLIC_KEY", "RELEASE_PUBLIC_KEY_FILE", "ALLOW_UNSIGNED"):
        monkeypatch.delenv(f"CLOUD_{name}", raising=False)
        monkeypatch.delenv(f"DEVICE_{name}", raising=False)
    with pytest.raises(ReleaseKeyError):
        cloud_verifier(CloudModels())
    with pytest.raises(ReleaseKeyError):
        agent_verifier(DeviceModels())
    assert not cloud_verifier(CloudModels(allow_unsigned=True)).signed
    assert not agent_verifier(DeviceModels(allow_unsigned=True)).signed
