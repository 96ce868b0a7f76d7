"""deploy/k8s validates against the Kubernetes API schemas and wires what compose wires."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
K8S_VERSION = "1.30.0"


def resources() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in MANIFESTS
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return list(pod.get("containers", []))


@pytest.mark.parametrize(
    ("name", "doc"), resources(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_manifest_is_valid_strictly(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_check_rejects_an_unknown_field() -> None:
    _, deployment = next((n, d) for n, d in resources() if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = 2  # a typo of `replicas`
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_secrets_come_from_a_secret_never_a_literal() -> None:
    for _, doc in resources():
        for c in containers(doc):
            for env in c.get("env", []):
                if env["name"] in {"CLOUD_AUTH_SECRET", "DEVICE_TOKEN_SECRET", "DEVICE_APP_SECRET"}:
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
        if doc["kind"] in {"ConfigMap", "Secret"}:
            assert not any("SECRET" in key for key in doc.get("data", {})), doc["metadata"]


def test_pods_run_as_the_images_user_with_probes() -> None:
    for name, doc in resources():
        if doc["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        for c in containers(doc):
            assert "readinessProbe" in c or "livenessProbe" in c, (name, c["name"])
        if doc["metadata"]["name"] != "tandem-redis":
            security = doc["spec"]["template"]["spec"]["securityContext"]
            assert security["runAsUser"] == 10001 and security["runAsNonRoot"], name
