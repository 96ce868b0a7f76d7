"""Untrained but complete model artifacts on a tiny world, so servers start in seconds (tests).

They are released as production ones are: signed by a release key (made in `out/release` when
none is given) into a registry (`out/registry/<kind>/versions/<version>` + `current`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from device_agent.policy.features import FEATURES
from simulator.pipeline import HISTORY_LEN, build_experiment
from simulator.scales import SCALES
from tandem_core.artifacts import read_manifest
from tandem_core.models.din import DinConfig, DinRanker
from tandem_core.models.edgerec import EdgeRecConfig, EdgeReranker
from tandem_core.release import (
    RANKER_BUNDLE,
    RERANKER,
    VALUE_MODEL,
    publish,
    set_current,
    versions,
)
from tandem_core.signing import Signer
from training.policy.uplift import ValueMLP, export_onnx
from training.ranker.artifacts import embedding_version
from training.ranker.bundle import write_bundle
from training.release import ensure_dev_key, release_value_model
from training.reranker.train import write_device_artifact


@dataclass(frozen=True)
class ArtifactDirs:
    bundle: Path  # registry/ranker_bundle (a kind directory with `current`)
    device: Path  # registry/reranker
    n_items: int
    dim: int
    value: Path | None = None  # registry/value_model
    public_key: Path | None = None  # the release public key (PEM) the servers trust
    private_key: Path | None = None
    embedding_version: str = ""


def staging(kind_dir: Path) -> Path:
    """A new directory on the registry's file system to write a version into."""
    kind_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staged-", dir=kind_dir)) / "v"


def publish_or_reuse(kind_dir: Path, staged: Path, promote: bool = True) -> str:
    """Publish a staged version; one with the same id already there (a rerun) is reused."""
    version = str(read_manifest(staged)["version"])
    if version not in versions(kind_dir):
        return publish(kind_dir, staged, promote)
    if promote:
        set_current(kind_dir, version)
    return version


def release_tiny_reranker(
    kind_dir: Path, signer: Signer | None, emb_version: str, dim: int, seed: int,
    promote: bool = True,
) -> str:  # fmt: skip
    """A random-init re-ranker (a new version per seed) added to `kind_dir`."""
    torch.manual_seed(seed)
    model = EdgeReranker(EdgeRecConfig(dim=dim)).eval()
    staged = staging(kind_dir)
    try:
        write_device_artifact(staged, model, emb_version, {"note": "untrained (tests)"}, signer)
        return publish_or_reuse(kind_dir, staged, promote)
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)


def release_tiny_value_model(kind_dir: Path, signer: Signer | None, seed: int) -> str:
    torch.manual_seed(seed)
    n = len(FEATURES)
    model = ValueMLP(np.zeros(n, np.float32), np.ones(n, np.float32), hidden=8).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, str(Path(tmp) / "value.onnx"))
        return release_value_model(kind_dir, Path(tmp) / "value.onnx", signer)


def write_tiny_artifacts(out: Path, seed: int = 0, signer: Signer | None = None) -> ArtifactDirs:
    """A serving bundle (random-init DIN, real co-click graph), a random-init device model and
    a random-init request-value model, signed (by a key made in `out/release` if none given).

    The weights are untrained on purpose: transport and storage tests need the real file
    formats and shapes, not model quality (measured elsewhere on trained artifacts).
    """
    public_key = private_key = None
    if signer is None:
        signer, public_key = ensure_dev_key(out / "release")
        private_key = public_key.with_name("release.key")
    torch.manual_seed(seed)
    exp = build_experiment(replace(SCALES["tiny"], seed=seed))
    cfg = exp.world.cfg
    din = DinRanker(
        DinConfig(n_items=cfg.n_items, n_categories=cfg.n_categories),
        torch.from_numpy(exp.world.catalog.category),
    ).eval()
    emb_version = embedding_version(din.item_embedding.weight)
    registry = out / "registry"
    staged = staging(registry / RANKER_BUNDLE)
    bundle = write_bundle(
        staged, din, exp.held_out.split.train, "din-tiny" + emb_version[4:],
        emb_version, HISTORY_LEN, signer,
    )  # fmt: skip
    publish_or_reuse(registry / RANKER_BUNDLE, staged)
    shutil.rmtree(staged.parent, ignore_errors=True)
    dim = din.cfg.item_dim + din.cfg.category_dim
    release_tiny_reranker(registry / RERANKER, signer, emb_version, dim, seed)
    release_tiny_value_model(registry / VALUE_MODEL, signer, seed)
    return ArtifactDirs(
        registry / RANKER_BUNDLE, registry / RERANKER, int(bundle["n_items"]),  # type: ignore[call-overload]
        dim, registry / VALUE_MODEL, public_key, private_key, emb_version,
    )  # fmt: skip
