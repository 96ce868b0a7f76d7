"""`python -m cloud_service.federated.publish --out DIR`: the federated model as a serving bundle.

Reads the global federated model from Redis (every item row, the dense layers and the version,
in one MULTI), loads it into the DIN and writes a new bundle next to the one the cloud serves:
a fresh ranker.onnx, the federated state as its federated.npz, the retrieval tables unchanged.
Start a cloud with CLOUD_BUNDLE_DIR=DIR to serve it. Torch is needed here (ONNX export), as for
the `models` job, not in the serving image.

The rows the cloud ships to devices (tables.npz item_rows) and their embedding_version are kept:
the device's re-ranker was distilled on those rows, so replacing them would change its inputs
under it. Only the cloud's own ranker takes the federated rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cloud_service.federated.store import FederatedStore
from cloud_service.recommender.bundle import export_din
from cloud_service.recommender.din import ranker_from_federated
from cloud_service.registry.bundle import (
    BUNDLE_FILES,
    FEDERATED,
    MANIFEST,
    RANKER_ONNX,
    TABLES,
    load_bundle,
    load_federated_start,
    read_manifest,
)


class PublishError(RuntimeError):
    """The federated model in Redis cannot be published (missing, or not this bundle's)."""


def publish(store: FederatedStore, bundle_dir: Path, out: Path) -> dict[str, Any]:
    """Write the federated model as a bundle in `out`; returns its manifest."""
    bundle_dir, out = Path(bundle_dir), Path(out)
    if out.resolve() == bundle_dir.resolve():
        raise PublishError("publish into a new directory, not over the bundle being served")
    bundle = load_bundle(bundle_dir)  # checks every sha256
    start_rows, _ = load_federated_start(bundle_dir)
    n_items, dim = start_rows.shape
    stored = store.row_count()
    if stored != n_items:
        raise PublishError(f"Redis holds {stored} federated rows, the bundle has {n_items} items")
    rows, dense, version = store.snapshot(range(n_items), dim)
    model = ranker_from_federated(rows, dense, bundle.item_category).eval()
    out.mkdir(parents=True, exist_ok=True)
    export_din(model, out / RANKER_ONNX)
    shutil.copyfile(bundle_dir / TABLES, out / TABLES)
    arrays = {"rows": rows, **{f"dense/{k}": v for k, v in dense.items()}}
    np.savez(out / FEDERATED, **arrays)  # type: ignore[arg-type]
    source = read_manifest(bundle_dir)
    manifest = {
        **source,
        "version": f"{source['version']}+fl{version}",
        "federated_version": version,
        "published_from": source["version"],
        "sha256": {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in BUNDLE_FILES},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: list[str] | None = None) -> int:
    from cloud_service.build import build_store
    from cloud_service.settings import CloudSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="directory of the new bundle")
    args = ap.parse_args(argv)
    s = CloudSettings()
    store = build_store(s)
    fl = FederatedStore(store.client, s.key_prefix, store.breaker)
    manifest = publish(fl, s.bundle_dir, args.out)
    print(f"published {manifest['version']} (federated version {manifest['federated_version']}) "
          f"to {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
