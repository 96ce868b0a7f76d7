"""Ranker artifacts on disk: safetensors weights + a manifest with versions and sha256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from simulator.world import WorldConfig
from tandem_core.artifacts import MANIFEST, ArtifactIntegrityError, sha256_file, write_manifest
from tandem_core.models.din import DinConfig, DinRanker

__all__ = [
    "ArtifactIntegrityError",
    "RankerManifest",
    "load_ranker",
    "read_ranker_manifest",
    "save_ranker",
]

WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class RankerManifest:
    version: str
    embedding_version: str
    sha256: dict[str, str]
    config: dict[str, Any]
    extra: dict[str, Any]


def embedding_version(table: torch.Tensor) -> str:
    """Version id of an embedding table: a hash of its bytes (EdgeRec's version handshake)."""
    data = table.detach().to(torch.float32).contiguous().numpy().tobytes()
    return "emb-" + hashlib.sha256(data).hexdigest()[:12]


def save_ranker(out_dir: Path, model: DinRanker, extra: dict[str, Any]) -> RankerManifest:
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    digest = sha256_file(weights)
    manifest = RankerManifest(
        version="din-" + digest[:12],
        embedding_version=embedding_version(model.item_embedding.weight),
        sha256={WEIGHTS: digest},
        config=model.cfg.to_dict(),
        extra=extra,
    )
    write_manifest(out_dir, manifest.__dict__)
    return manifest


def read_ranker_manifest(model_dir: Path) -> RankerManifest:
    return RankerManifest(**json.loads((model_dir / MANIFEST).read_text()))


def load_ranker(model_dir: Path) -> tuple[DinRanker, RankerManifest]:
    """Load weights after checking their sha256; safetensors holds tensors only, no pickle."""
    manifest = read_ranker_manifest(model_dir)
    weights = model_dir / WEIGHTS
    if sha256_file(weights) != manifest.sha256[WEIGHTS]:
        raise ArtifactIntegrityError(f"{weights} does not match the sha256 in its manifest")
    state = load_file(str(weights))
    cfg_dict = dict(manifest.config)
    cfg_dict["tower_hidden"] = tuple(cfg_dict["tower_hidden"])
    model = DinRanker(DinConfig(**cfg_dict), state["item_category"])
    model.load_state_dict(state)
    model.eval()
    return model, manifest


def world_config(manifest: RankerManifest) -> WorldConfig:
    """The world the ranker was trained on (JSON turned its tuples into lists)."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in manifest.extra["world"].items()}
    return WorldConfig(**fields)  # type: ignore[arg-type]
