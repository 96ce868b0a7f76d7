"""The signed registry end to end: real cloud + agent servers on port 0, tiny signed artifacts.

Forged, tampered, truncated, unsigned and path-escaping versions are refused (by the replica,
and by the agent itself when a replica serves them) and the old model keeps serving; a
promoted version reaches a running agent and replica without a restart; rollback too.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tandem_core.artifacts import MANIFEST, sha256_bytes
from tandem_core.release import VERSIONS, resolve, rollback, set_current
from tandem_core.signing import Signer, generate_keypair
from tests.credentials import APP_TOKENS, TOKEN_SECRET, app_post
from tests.integration.conftest import StartCloud
from training.tiny import ArtifactDirs, release_tiny_reranker, release_tiny_value_model

pytestmark = pytest.mark.integration


def copy_registry(tiny: ArtifactDirs, tmp_path: Path) -> dict[str, Path]:
    """A private copy of the tiny registry (the session's fixture stays untouched)."""
    out = {}
    for name, src in (("bundle", tiny.bundle), ("device", tiny.device), ("value", tiny.value)):
        assert src is not None
        out[name] = tmp_path / src.name
        shutil.copytree(src, out[name])
    return out


def other_signer(tmp_path: Path) -> tuple[Signer, Path]:
    private, public = generate_keypair()
    (tmp_path / "other.key").write_bytes(private)
    (tmp_path / "other.pub").write_bytes(public)
    return Signer.from_file(tmp_path / "other.key"), tmp_path / "other.pub"


def derived_version(
    kind_dir: Path, version: str, change: Callable[[Path, dict[str, Any]], dict[str, Any]]
) -> Path:
    """A copy of the current version as `version`; `change` edits its files and returns the
    manifest to write (signed or not, as the test wants)."""
    target = kind_dir / VERSIONS / version
    shutil.copytree(resolve(kind_dir), target)
    manifest = json.loads((target / MANIFEST).read_text())
    manifest = change(target, {**manifest, "version": version})
    (target / MANIFEST).write_text(json.dumps(manifest))
    return target


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError("timed out")
        time.sleep(0.02)
    return time.monotonic() - start


def served_ranker(cloud: Any, device: str = "phone-1") -> str:
    body = {"device_id": device, "k": 4}
    headers = {"X-Device-Token": token(device)}
    r = httpx.post(f"http://127.0.0.1:{cloud.http_port}/v1/recommend", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


def token(device: str) -> str:
    from protos.auth import device_token

    return device_token(TOKEN_SECRET.encode(), device)


def status(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/v1/status").json())


def test_bad_versions_are_refused_by_the_replica_and_the_old_one_keeps_serving(
    start_cloud: StartCloud, start_agent: Any, tiny_artifacts: ArtifactDirs, tmp_path: Path
) -> None:
    reg = copy_registry(tiny_artifacts, tmp_path)
    cloud, services = start_cloud(device_model_dir=reg["device"], bundle_dir=reg["bundle"],
                                  model_poll_s=0.05)  # fmt: skip
    url, agent = start_agent(cloud.grpc_port, model_poll_s=3600)
    good = agent.agent.reranker.version
    registry = services.device_models.registries["reranker"]
    signer = Signer.from_file(tiny_artifacts.private_key)  # type: ignore[arg-type]
    forger, _ = other_signer(tmp_path)

    def retouch(
        onnx_change: Callable[[bytes], bytes], sign: Signer | str | None, rehash: bool = True
    ) -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
        """Change the model file; re-hash it or not; sign with `sign`, keep the old signature
        ("keep") or drop it (None)."""

        def change(d: Path, m: dict[str, Any]) -> dict[str, Any]:
            path = d / m["file"]
            path.write_bytes(onnx_change(path.read_bytes()))
            if rehash:
                m["sha256"] = {m["file"]: sha256_bytes(path.read_bytes())}
            if sign is None:
                m.pop("signature", None)
            return sign.sign(m) if isinstance(sign, Signer) else m

        return change

    def escape(name: str, link: bool = False) -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
        def change(d: Path, m: dict[str, Any]) -> dict[str, Any]:
            target = Path("/etc/hostname")
            if link:
                (d / name).symlink_to(target)
            m["file"] = name
            m["sha256"] = {name: sha256_bytes(target.read_bytes())}
            return signer.sign(m)  # even signed by the release key: confined to its directory

        return change

    bad = {
        "forged": retouch(lambda b: b, forger),  # signed by another key
        "tampered": retouch(lambda b: b + b"\0", "keep"),  # changed after signing, re-hashed
        "truncated": retouch(lambda b: b[: len(b) // 2], "keep", rehash=False),
        "unsigned": retouch(lambda b: b, None),
        "absolute": escape("/etc/hostname"),
        "dotdot": escape("../../../../../../etc/hostname"),
        "symlink": escape("model.onnx", link=True),
    }
    for version, change in bad.items():
        derived_version(reg["device"], f"bad-{version}", change)
        set_current(reg["device"], f"bad-{version}")
        model = registry.current()
        assert model is not None and model.version == good, version
        assert not agent.agent.reranker.refresh(agent.agent.cloud, "agent-0", timeout_s=5)
        assert agent.agent.reranker.version == good, version
        page = app_post(f"{url}/v1/recommend", json={"device_id": "p", "k": 4}).json()
        assert page["model_version"] == good
    # the same for the ranker bundle: a forged one never replaces the served recommender
    first = served_ranker(cloud)
    derived_version(reg["bundle"], "din-forged", lambda d, m: forger.sign(m))
    set_current(reg["bundle"], "din-forged")
    assert not services.bundle_watch.check()  # type: ignore[union-attr]
    time.sleep(0.2)
    assert served_ranker(cloud) == first
    metrics = httpx.get(f"http://127.0.0.1:{cloud.http_port}/metrics").text
    assert 'tandem_cloud_model_loads_total{kind="reranker",outcome="refused"}' in metrics
    assert 'tandem_cloud_model_loads_total{kind="ranker_bundle",outcome="refused"}' in metrics


def test_the_agent_refuses_what_a_compromised_replica_serves(
    start_cloud: StartCloud, start_agent: Any, tiny_artifacts: ArtifactDirs, tmp_path: Path
) -> None:
    """A replica that trusts another key (or anything) cannot make the agent install a model."""
    reg = copy_registry(tiny_artifacts, tmp_path)
    forger, _ = other_signer(tmp_path)
    derived_version(reg["device"], "edgerec-forged", lambda d, m: forger.sign(m))
    set_current(reg["device"], "edgerec-forged")
    # a replica that checks nothing (development mode: no key) serves the forged model
    lax, services = start_cloud(device_model_dir=reg["device"], release_public_key_file=None,
                                allow_unsigned=True)  # fmt: skip
    assert services.device_models.registries["reranker"].current().version == "edgerec-forged"  # type: ignore[union-attr]
    url, agent = start_agent(lax.grpc_port, model_poll_s=3600)
    assert agent.agent.reranker.version == ""  # refused at start: no model rather than a forged one
    assert agent.agent.reranker.refused >= 1
    # unsigned, from the same replica: refused too
    derived_version(reg["device"], "edgerec-unsigned",
                    lambda d, m: {k: v for k, v in m.items() if k != "signature"})  # fmt: skip
    set_current(reg["device"], "edgerec-unsigned")
    assert not agent.agent.reranker.refresh(agent.agent.cloud, "agent-0", timeout_s=5)
    assert agent.agent.reranker.version == ""
    assert app_post(f"{url}/v1/recommend", json={"device_id": "p", "k": 4}).status_code == 200
    metrics = httpx.get(f"{url}/metrics").text
    assert 'tandem_agent_model_updates_total{kind="reranker",outcome="refused"}' in metrics


def test_promotion_and_rollback_reach_a_running_agent_and_replica(
    start_cloud: StartCloud, start_agent: Any, tiny_artifacts: ArtifactDirs, tmp_path: Path
) -> None:
    reg = copy_registry(tiny_artifacts, tmp_path)
    cloud, _ = start_cloud(device_model_dir=reg["device"], bundle_dir=reg["bundle"],
                           value_model_dir=reg["value"], model_poll_s=0.1)  # fmt: skip
    url, _ = start_agent(cloud.grpc_port, model_poll_s=0.1)
    signer = Signer.from_file(tiny_artifacts.private_key)  # type: ignore[arg-type]
    before = status(url)
    rr1, vm1, rk1 = before["reranker_version"], before["value_model"], served_ranker(cloud)
    assert rr1.startswith("edgerec-") and vm1.startswith("value-")
    # requests keep flowing to both processes through every swap; none may fail
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            for target, body, headers in (
                (f"{url}/v1/recommend", {"device_id": "load", "k": 4},
                 APP_TOKENS.header("load")),
                (f"http://127.0.0.1:{cloud.http_port}/v1/recommend", {"device_id": "load", "k": 4},
                 {"X-Device-Token": token("load")}),
            ):  # fmt: skip
                r = httpx.post(target, json=body, headers=headers, timeout=5)
                if r.status_code != 200:
                    failures.append(f"{target}: {r.status_code} {r.text[:80]}")

    load = threading.Thread(target=traffic, daemon=True)
    load.start()
    # promote: a new re-ranker, value model and ranker bundle (same embeddings, re-signed)
    emb, dim = tiny_artifacts.embedding_version, tiny_artifacts.dim
    rr2 = release_tiny_reranker(reg["device"], signer, emb, dim, seed=11)
    vm2 = release_tiny_value_model(reg["value"], signer, seed=11)
    derived_version(reg["bundle"], "din-tiny-v2", lambda d, m: signer.sign(m))
    set_current(reg["bundle"], "din-tiny-v2")
    wait_for(lambda: status(url)["reranker_version"] == rr2 != rr1)
    wait_for(lambda: status(url)["value_model"] == vm2 != vm1)
    wait_for(lambda: served_ranker(cloud) == "din-tiny-v2" != rk1)
    page = app_post(f"{url}/v1/recommend", json={"device_id": "q", "k": 4}).json()
    assert page["model_version"] == rr2
    # rollback: `current` back to the previous version; both processes follow
    assert rollback(reg["device"]) == rr1
    assert rollback(reg["value"]) == vm1
    assert rollback(reg["bundle"]) == rk1
    wait_for(lambda: status(url)["reranker_version"] == rr1)
    wait_for(lambda: status(url)["value_model"] == vm1)
    wait_for(lambda: served_ranker(cloud) == rk1)
    stop.set()
    load.join(timeout=10)
    assert not failures, failures[:3]
