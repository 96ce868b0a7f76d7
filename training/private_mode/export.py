"""ONNX exports of the private mode: the ranker over behaviour rows, and the device encoder."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from tandem_core.artifacts import sha256_file, write_manifest
from tandem_core.models.din import DinRanker
from tandem_core.release import INTEREST_ENCODER, release_manifest
from tandem_core.signing import Signer
from training.private_mode.encoder import InterestEncoder

ENCODER_ONNX = "interest_encoder.onnx"
ENCODER_INPUTS = ("rows", "mask")
ENCODER_OUTPUTS = ("interests", "weights")
PRIVATE_INPUTS = ("history_rows", "history_weight", "candidates")


class RowsRanker(nn.Module):
    """DinRanker.forward_rows as a module's forward (what the exporter traces)."""

    def __init__(self, model: DinRanker) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, history_rows: torch.Tensor, history_weight: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_rows(history_rows, history_weight, candidates)


def export_private_ranker(model: DinRanker, path: Path) -> None:
    """The ranker over (rows, weights) of a behaviour set; the same weights as ranker.onnx."""
    dim = model.cfg.item_dim + model.cfg.category_dim
    # batch ≥ 2 and dynamic axes, else the exporter freezes the shapes
    example = (torch.zeros(2, 3, dim), torch.ones(2, 3), torch.tensor([[3, 4], [5, -1]]))
    torch.onnx.export(
        RowsRanker(model.eval()), example, str(path), dynamo=False, opset_version=17,
        input_names=list(PRIVATE_INPUTS), output_names=["ctr", "ctcvr"],
        dynamic_axes={
            "history_rows": {0: "batch", 1: "events"}, "history_weight": {0: "batch", 1: "events"},
            "candidates": {0: "batch", 1: "items"},
            "ctr": {0: "batch", 1: "items"}, "ctcvr": {0: "batch", 1: "items"},
        },
    )  # fmt: skip
    onnx.checker.check_model(onnx.load(str(path)))


def export_encoder(encoder: InterestEncoder, path: Path) -> str:
    """The encoder with a dynamic batch (the history length is fixed); returns the sha256."""
    cfg = encoder.cfg
    mask = torch.zeros(2, cfg.history_len)
    mask[:, -3:] = 1.0
    example = (torch.zeros(2, cfg.history_len, cfg.dim), mask)
    torch.onnx.export(
        encoder.eval(), example, str(path), dynamo=False, opset_version=17,
        input_names=list(ENCODER_INPUTS), output_names=list(ENCODER_OUTPUTS),
        dynamic_axes={name: {0: "batch"} for name in (*ENCODER_INPUTS, *ENCODER_OUTPUTS)},
    )  # fmt: skip
    onnx.checker.check_model(onnx.load(str(path)))
    return sha256_file(path)


def write_encoder_artifact(
    out: Path,
    encoder: InterestEncoder,
    embedding_version: str,
    ranker_version: str,
    extra: dict[str, object],
    signer: Signer | None = None,
) -> dict[str, object]:
    """The encoder's version directory (kind interest_encoder): ONNX + manifest, signed if
    `signer`. `embedding_version` is the rows it reads; `ranker_version` the ranker it mimics."""
    out.mkdir(parents=True, exist_ok=True)
    digest = export_encoder(encoder, out / ENCODER_ONNX)
    manifest: dict[str, object] = {
        "version": "interest-" + digest[:12],
        "file": ENCODER_ONNX,
        "sha256": {ENCODER_ONNX: digest},
        "embedding_version": embedding_version,
        "ranker_version": ranker_version,
        "config": encoder.cfg.to_dict(),
        **extra,
    }
    manifest = release_manifest(manifest, INTEREST_ENCODER, signer)
    write_manifest(out, manifest)
    return manifest
