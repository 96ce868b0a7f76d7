"""Untrained but complete model artifacts on a tiny world, so servers start in seconds (tests)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from simulator.pipeline import HISTORY_LEN, build_experiment
from simulator.scales import SCALES
from tandem_core.models.din import DinConfig, DinRanker
from tandem_core.models.edgerec import EdgeRecConfig, EdgeReranker
from training.ranker.artifacts import embedding_version
from training.ranker.bundle import write_bundle
from training.reranker.train import write_device_artifact


@dataclass(frozen=True)
class ArtifactDirs:
    bundle: Path
    device: Path
    n_items: int
    dim: int


def write_tiny_artifacts(out: Path, seed: int = 0) -> ArtifactDirs:
    """A serving bundle (random-init DIN, real co-click graph) and a random-init device model.

    The weights are untrained on purpose: transport and storage tests need the real file
    formats and shapes, not model quality (measured elsewhere on trained artifacts).
    """
    torch.manual_seed(seed)
    exp = build_experiment(replace(SCALES["tiny"], seed=seed))
    cfg = exp.world.cfg
    din = DinRanker(
        DinConfig(n_items=cfg.n_items, n_categories=cfg.n_categories),
        torch.from_numpy(exp.world.catalog.category),
    ).eval()
    emb_version = embedding_version(din.item_embedding.weight)
    bundle = write_bundle(
        out / "bundle", din, exp.held_out.split.train, "din-tiny" + emb_version[4:],
        emb_version, HISTORY_LEN,
    )  # fmt: skip
    dim = din.cfg.item_dim + din.cfg.category_dim
    device = EdgeReranker(EdgeRecConfig(dim=dim)).eval()
    write_device_artifact(out / "device", device, emb_version, {"note": "untrained (tests)"})
    return ArtifactDirs(out / "bundle", out / "device", int(bundle["n_items"]), dim)  # type: ignore[call-overload]
