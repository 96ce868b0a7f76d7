"""`python -m training.federated.publish --out DIR`: the federated model as a serving bundle.

Reads the global federated model from Redis (every item row, the dense layers and the version,
in one MULTI), loads it into the DIN and writes a new bundle next to the one the cloud serves:
a fresh ranker.onnx, the federated state as its federated.npz, the retrieval tables unchanged.
Signed by the release key (`--release-key` or TANDEM_RELEASE_KEY_FILE), kind
`federated_bundle`; add it to a registry (`python -m training.release publish --kind
federated_bundle --from DIR`) and point CLOUD_BUNDLE_DIR there, or start a cloud with
CLOUD_BUNDLE_DIR=DIR. Torch is needed here (ONNX export), as for the `models` job, not in the
serving image.

The rows the cloud ships to devices (tables.npz item_rows) and their embedding_version are kept:
the device's re-ranker was distilled on those rows, so replacing them would change its inputs
under it. Only the cloud's own ranker takes the federated rows.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cloud_service.registry.bundle import load_bundle, load_federated_start
from cloud_service.store.federated_redis import FederatedStore
from tandem_core.artifacts import (
    BUNDLE_FILES,
    FEDERATED,
    RANKER_ONNX,
    TABLES,
    digests,
    read_manifest,
    staged_dir,
    write_manifest,
)
from tandem_core.models.din import ranker_from_federated
from tandem_core.release import FEDERATED_BUNDLE, release_manifest, resolve
from tandem_core.signing import SIGNATURE, Signer
from training.ranker.bundle import export_din


class PublishError(RuntimeError):
    """The federated model in Redis cannot be published (missing, or not this bundle's)."""


def publish(
    store: FederatedStore, bundle_dir: Path, out: Path, signer: Signer | None = None
) -> dict[str, Any]:
    """Write the federated model as a bundle in `out` (new or empty); returns its manifest,
    signed by the release key when `signer` is given (kind `federated_bundle`).

    The bundle is written into a temporary sibling and renamed into place, so `out` holds either
    nothing or a complete bundle whose manifest matches its files. `bundle_dir` is a registry
    kind directory (its `current` is read) or one version directory."""
    bundle_dir, out = resolve(Path(bundle_dir)), Path(out)
    if out.exists() and any(out.iterdir()):
        raise PublishError(f"{out} is not empty: publish into a new directory")
    bundle = load_bundle(bundle_dir)  # checks every sha256
    start_rows, start_dense = load_federated_start(bundle_dir)
    n_items, dim = start_rows.shape
    stored = store.row_count()
    if stored != n_items:
        raise PublishError(f"Redis holds {stored} federated rows, the bundle has {n_items} items")
    rows, dense, version = store.snapshot(range(n_items), dim)
    shapes = {n: a.shape for n, a in dense.items()}
    if shapes != {n: a.shape for n, a in start_dense.items()}:
        raise PublishError("the federated layers in Redis are not this bundle's model")
    model = ranker_from_federated(rows, dense, bundle.item_category).eval()
    with staged_dir(out) as tmp:
        export_din(model, tmp / RANKER_ONNX)
        shutil.copyfile(bundle_dir / TABLES, tmp / TABLES)
        arrays = {"rows": rows, **{f"dense/{k}": v for k, v in dense.items()}}
        np.savez(tmp / FEDERATED, **arrays)  # type: ignore[arg-type]
        files = digests(tmp, BUNDLE_FILES)
        source = {k: v for k, v in read_manifest(bundle_dir).items() if k != SIGNATURE}
        manifest = {
            **source,
            # the content hash keeps versions apart when a reset Redis counts rounds from 0 again
            "version": f"{source['version']}+fl{version}.{files[FEDERATED][:8]}",
            "federated_version": version,
            "published_from": source["version"],
            "sha256": files,
        }
        manifest = release_manifest(manifest, FEDERATED_BUNDLE, signer)
        write_manifest(tmp, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    from cloud_service.settings import load_settings
    from cloud_service.store.breaker import Breaker
    from cloud_service.store.redis_store import build_redis

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="a new (or empty) bundle directory")
    ap.add_argument("--timeout-s", type=float, default=30.0, help="deadline of the Redis read")
    ap.add_argument(
        "--release-key", type=Path, default=None,
        help="sign with this release key (default $TANDEM_RELEASE_KEY_FILE; unsigned without "
        "either); add the bundle to a registry with `python -m training.release publish`",
    )  # fmt: skip
    args = ap.parse_args(argv)
    from training.release import signer_from

    signer = signer_from(args.release_key)
    s = load_settings()
    # its own deadline: the serving one (a fraction of a second) is for single-row reads, this
    # reads every row in one MULTI
    client = build_redis(
        s.store.redis_url, socket_timeout_s=args.timeout_s, retries=s.store.redis_retries
    )
    try:
        fl = FederatedStore(
            client, s.store.key_prefix, Breaker(open_s=s.store.redis_open_circuit_s)
        )
        manifest = publish(fl, s.models.bundle_dir, args.out, signer)
    except PublishError as exc:
        print(f"not published: {exc}")
        return 2
    finally:
        client.close()
    print(f"published {manifest['version']} (federated version {manifest['federated_version']}) "
          f"to {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
