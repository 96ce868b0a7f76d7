"""The gated federated publish on a real Redis and a running replica (servers on port 0): the
federated model becomes a candidate of the served kind directory, passes the gate and is
served without a restart; a worse candidate is refused and the served one stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_service.registry.bundle import load_bundle
from cloud_service.registry.bundle_watch import BundleWatch
from tandem_core.release import current_version, history, version_dir
from tandem_core.signing import Signer, build_verifier
from tests.integration.conftest import StartCloud
from tests.integration.test_signed_registry import copy_registry, served_ranker, wait_for
from tests.unit.test_gate import add_candidate, labelled_by
from training.federated.publish import publish_gated
from training.gate import gate
from training.tiny import ArtifactDirs

pytestmark = pytest.mark.integration


def test_a_gated_federated_publish_reaches_the_running_replica(
    start_cloud: StartCloud, tiny_artifacts: ArtifactDirs, tmp_path: Path
) -> None:
    kind_dir = copy_registry(tiny_artifacts, tmp_path)["bundle"]
    cloud, services = start_cloud(bundle_dir=kind_dir, model_poll_s=0.05)
    assert services.federated is not None  # the replica wrote version 0 into Redis
    signer = Signer.from_file(tiny_artifacts.private_key)  # type: ignore[arg-type]
    verifier = build_verifier(None, tiny_artifacts.public_key, False)
    before = served_ranker(cloud)
    # clicks follow the served ranker; the federated model at version 0 is that ranker
    v = labelled_by(load_bundle(kind_dir).ranker_onnx, tiny_artifacts.n_items)

    manifest, report = publish_gated(services.federated.store, kind_dir, v, signer,
                                     verifier=verifier)  # fmt: skip
    version = str(manifest["version"])
    assert manifest["kind"] == "federated_bundle" and version.startswith(f"{before}+fl0.")
    assert report.promoted, report.reason
    assert report.current == before and abs(report.delta or 0.0) <= 0.005
    assert current_version(kind_dir) == version and history(kind_dir)[-1] == version
    wait_for(lambda: served_ranker(cloud) == version)  # hot-swapped, no restart

    # a worse candidate (another random ranker) is refused; the federated one keeps serving
    worse = add_candidate(kind_dir, signer, seed=21)
    v2 = labelled_by(
        load_bundle(version_dir(kind_dir, version)).ranker_onnx, tiny_artifacts.n_items
    )
    refused = gate(kind_dir, worse, v2, verifier=verifier)
    assert not refused.promoted and current_version(kind_dir) == version
    assert isinstance(services.bundle_watch, BundleWatch) and not services.bundle_watch.check()
    assert served_ranker(cloud) == version
