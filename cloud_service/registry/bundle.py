"""Loads the ranker's serving bundle (ONNX + tables) after checking its signature and sha256s."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from tandem_core.artifacts import FEDERATED, PRIVATE_RANKER_ONNX, RANKER_ONNX, TABLES
from tandem_core.release import BUNDLE_KINDS, VerifiedArtifact, load_verified
from tandem_core.signing import Verifier

# sha256 only: offline tools (publish, experiments) reading a bundle they were pointed at
UNCHECKED = Verifier(None)


@dataclass(frozen=True)
class ServingBundle:
    """What the cloud ranks with; arrays are read-only and shared by every request."""

    version: str
    embedding_version: str
    history_len: int
    ranker_onnx: bytes
    item_rows: np.ndarray  # (n_items, dim) float32, the rows shipped to devices
    item_category: np.ndarray  # (n_items,) int64
    popularity: np.ndarray  # (n_items,) training clicks
    co_clicks: sp.csr_matrix  # (n_items, n_items)
    private_ranker_onnx: bytes | None = None  # the ranker over behaviour rows; None: not shipped

    @property
    def n_items(self) -> int:
        return int(self.item_rows.shape[0])

    @property
    def dim(self) -> int:
        return int(self.item_rows.shape[1])


def load_bundle(directory: Path, verifier: Verifier | None = None) -> ServingBundle:
    """The bundle a path names (a registry kind directory's `current`, or one version directory)
    after its signature (when `verifier` holds a key) and every file's sha256 are checked."""
    checked = verifier is not None
    art = load_verified(directory, verifier or UNCHECKED, BUNDLE_KINDS if checked else None)
    return bundle_from(art)


def bundle_from(art: VerifiedArtifact) -> ServingBundle:
    manifest = art.manifest
    with np.load(io.BytesIO(art.files[TABLES]), allow_pickle=False) as t:
        n = int(t["item_rows"].shape[0])
        co = sp.csr_matrix((t["co_data"], t["co_indices"], t["co_indptr"]), shape=(n, n))
        arrays = {k: np.array(t[k]) for k in ("item_rows", "item_category", "popularity")}
    for arr in arrays.values():
        arr.flags.writeable = False
    return ServingBundle(
        version=str(manifest["version"]),
        embedding_version=str(manifest["embedding_version"]),
        history_len=int(manifest["history_len"]),
        ranker_onnx=art.files[RANKER_ONNX],
        item_rows=arrays["item_rows"].astype(np.float32, copy=False),
        item_category=arrays["item_category"].astype(np.int64, copy=False),
        popularity=arrays["popularity"],
        co_clicks=co,
        private_ranker_onnx=art.files.get(PRIVATE_RANKER_ONNX),
    )


def load_federated_start(
    directory: Path, verifier: Verifier | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The federated model's starting point in a bundle: (item rows, dense layers by name)."""
    art = load_verified(directory, verifier or UNCHECKED)
    with np.load(io.BytesIO(art.files[FEDERATED]), allow_pickle=False) as f:
        rows = np.array(f["rows"], dtype=np.float32)
        dense = {
            k[len("dense/") :]: np.array(f[k], dtype=np.float32) for k in f.files if k != "rows"
        }
    return rows, dense
