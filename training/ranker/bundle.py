"""Writes the serving bundle: DIN as ONNX, item rows, category, popularity and co-click graph."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import scipy.sparse as sp
import torch

from simulator.logs import Impressions
from tandem_core.artifacts import (
    BUNDLE_FILES,
    FEDERATED,
    PRIVATE_RANKER_ONNX,
    RANKER_ONNX,
    TABLES,
    digests,
    read_manifest,
    staged_dir,
    write_manifest,
)
from tandem_core.models.din import DinRanker, federated_dense, federated_rows
from tandem_core.release import RANKER_BUNDLE, release_manifest
from tandem_core.signing import SIGNATURE, Signer
from training.private_mode.export import export_private_ranker


def export_din(model: DinRanker, path: Path) -> None:
    # Example batch ≥ 2 with dynamic axes, else the exporter freezes the batch dimension.
    example = (torch.tensor([[0, 1, -1], [2, -1, -1]]), torch.tensor([[3, 4], [5, -1]]))
    torch.onnx.export(
        model.eval(), example, str(path), dynamo=False, opset_version=17,
        input_names=["history", "candidates"], output_names=["ctr", "ctcvr"],
        dynamic_axes={
            "history": {0: "batch", 1: "events"}, "candidates": {0: "batch", 1: "items"},
            "ctr": {0: "batch", 1: "items"}, "ctcvr": {0: "batch", 1: "items"},
        },
    )  # fmt: skip
    onnx.checker.check_model(onnx.load(str(path)))


def co_click_graph(train: Impressions, n_items: int) -> sp.csr_matrix:
    """Session co-click counts between items (diagonal removed), the retriever's second source."""
    clicked = train.click.astype(bool)
    sessions, items = train.session[clicked], train.item[clicked]
    if len(items) == 0:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    _, sess_idx = np.unique(sessions, return_inverse=True)
    incidence = sp.csr_matrix(
        (np.ones(len(items), dtype=np.float32), (sess_idx, items)),
        shape=(int(sess_idx.max()) + 1, n_items),
    )
    incidence.data[:] = 1.0
    co = (incidence.T @ incidence).tocsr()
    co.setdiag(0.0)
    co.eliminate_zeros()
    return co.astype(np.float32)


def item_rows(model: DinRanker) -> np.ndarray:
    """The rows the cloud ships per item: [item embedding, category embedding] (n_items, D)."""
    with torch.inference_mode():
        emb, _ = model.embed(torch.arange(model.cfg.n_items))
    return emb.numpy().astype(np.float32)


def federated_start(model: DinRanker) -> dict[str, np.ndarray]:
    """The federated model: `rows` = [item embedding | item bias (CTR, CVR)] per item, the row
    layout devices train and push; `dense/<name>` = every other float layer."""
    out = {"rows": federated_rows(model).astype(np.float32)}
    out.update({f"dense/{n}": a.astype(np.float32) for n, a in federated_dense(model).items()})
    return out


def write_bundle(
    out: Path,
    model: DinRanker,
    train: Impressions,
    ranker_version: str,
    embedding_version: str,
    history_len: int,
    signer: Signer | None = None,
) -> dict[str, object]:
    """Export everything the cloud serves from into `out`; the manifest records each sha256
    and is signed by the release key when `signer` is given."""
    out.mkdir(parents=True, exist_ok=True)
    n_items = model.cfg.n_items
    export_din(model, out / RANKER_ONNX)
    export_private_ranker(model, out / PRIVATE_RANKER_ONNX)  # the same weights, over rows
    co = co_click_graph(train, n_items)
    clicks = np.bincount(train.item[train.click.astype(bool)], minlength=n_items)
    np.savez(
        out / TABLES,
        item_rows=item_rows(model),
        item_category=model.item_category.numpy().astype(np.int64),
        popularity=clicks.astype(np.float32),
        co_data=co.data, co_indices=co.indices, co_indptr=co.indptr,
    )  # fmt: skip
    np.savez(out / FEDERATED, **federated_start(model))  # type: ignore[arg-type]
    manifest: dict[str, object] = {
        "version": ranker_version,
        "embedding_version": embedding_version,
        "n_items": n_items,
        "n_categories": model.cfg.n_categories,
        "history_len": history_len,
        "sha256": digests(out, (*BUNDLE_FILES, PRIVATE_RANKER_ONNX)),
    }
    manifest = release_manifest(manifest, RANKER_BUNDLE, signer)
    write_manifest(out, manifest)
    return manifest


# what a source manifest says about how its own ranker was made: not inherited by a new one
PROVENANCE = (SIGNATURE, "kind", "federated_version", "published_from", "trained_on")


def write_ranker_version(
    out: Path,
    model: DinRanker,
    source_dir: Path,
    federated: dict[str, np.ndarray],
    fields: Mapping[str, object],
    kind: str,
    signer: Signer | None = None,
) -> dict[str, object]:
    """A new version of the served bundle in `source_dir` with only the cloud's ranker replaced:
    `model` as ranker.onnx, `federated` as federated.npz, the retrieval tables (and the rows
    shipped to devices, with their embedding version) copied, so a replica can hot-swap it and
    the devices' re-rankers still match. `fields` go over the source manifest (version, …)."""
    with staged_dir(out) as tmp:
        export_din(model, tmp / RANKER_ONNX)
        shutil.copyfile(Path(source_dir) / TABLES, tmp / TABLES)
        np.savez(tmp / FEDERATED, **federated)  # type: ignore[arg-type]
        files = digests(tmp, BUNDLE_FILES)
        source = {k: v for k, v in read_manifest(source_dir).items() if k not in PROVENANCE}
        manifest = {**source, **fields, "published_from": source["version"], "sha256": files}
        manifest = release_manifest(manifest, kind, signer)
        write_manifest(tmp, manifest)
    return manifest
