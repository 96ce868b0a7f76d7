"""`python -m training.federated.publish --out DIR | --gated`: the federated model as a bundle.

Reads the global federated model from Redis (every item row, the dense layers and the version,
in one MULTI), loads it into the DIN and writes a new bundle next to the one the cloud serves:
a fresh ranker.onnx, the federated state as its federated.npz, the retrieval tables unchanged.
Signed by the release key (`--release-key` or TANDEM_RELEASE_KEY_FILE), kind
`federated_bundle`. `--gated` adds it as a candidate version to CLOUD_BUNDLE_DIR (the kind
directory the replicas serve and hot-swap from) and runs the validation gate against its
`current` (`training.gate`): promoted only if not worse by more than the tolerance. `--out DIR`
only writes it (no registry). Torch is needed here (ONNX export), as for the `models` job, not
in the serving image.

The rows the cloud ships to devices (tables.npz item_rows) and their embedding_version are kept:
the device's re-ranker was distilled on those rows, so replacing them would change its inputs
under it. Only the cloud's own ranker takes the federated rows."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cloud_service.registry.bundle import UNCHECKED, load_bundle, load_federated_start
from cloud_service.store.federated_redis import FederatedStore
from cloud_service.store.federated_state import FederatedState
from tandem_core.artifacts import read_manifest
from tandem_core.models.din import ranker_from_federated
from tandem_core.release import FEDERATED_BUNDLE, add_version, resolve, versions
from tandem_core.signing import Signer, Verifier
from training.gate import (
    DEFAULT_TOLERANCE,
    GateReport,
    Validation,
    add_validation_arguments,
    gate,
)
from training.ranker.bundle import write_ranker_version


class PublishError(RuntimeError):
    """The federated model in Redis cannot be published (missing, or not this bundle's)."""


def publish(
    store: FederatedState, bundle_dir: Path, out: Path, signer: Signer | None = None
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
    arrays = {"rows": rows, **{f"dense/{k}": v for k, v in dense.items()}}
    state = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values()))
    source = read_manifest(bundle_dir)
    fields = {
        # the state's hash keeps versions apart when a reset Redis counts rounds from 0 again
        # named after the centrally trained ranker, also when `current` is a federated one
        "version": f"{str(source['version']).split('+fl')[0]}+fl{version}.{state.hexdigest()[:8]}",
        "federated_version": version,
    }
    return write_ranker_version(out, model, bundle_dir, arrays, fields, FEDERATED_BUNDLE, signer)


def publish_gated(
    store: FederatedState,
    kind_dir: Path,
    validation: Validation,
    signer: Signer | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    verifier: Verifier = UNCHECKED,
    known_auc: dict[str, float] | None = None,
) -> tuple[dict[str, Any], GateReport]:
    """Publish the federated model as a candidate version of the kind directory the replicas
    serve (CLOUD_BUNDLE_DIR: its `current` is the base and the comparison), then gate it: it
    becomes `current` — and the replicas hot-swap to it — only if it passes."""
    kind_dir = Path(kind_dir)
    staged = Path(tempfile.mkdtemp(prefix=".staged-", dir=kind_dir)) / "v"
    try:
        manifest = publish(store, kind_dir, staged, signer)
        if str(manifest["version"]) not in versions(kind_dir):  # the same state: gate it again
            add_version(kind_dir, staged)  # unpromoted, as `training.release publish --no-promote`
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)
    report = gate(kind_dir, str(manifest["version"]), validation, tolerance, verifier, known_auc)
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    from cloud_service.settings import load_settings
    from cloud_service.store.breaker import Breaker
    from cloud_service.store.redis_store import build_redis
    from training.gate import REFUSED_EXIT, print_report, validation_from, verifier_from

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="a new (or empty) bundle directory")
    ap.add_argument(
        "--gated",
        action="store_true",
        help="instead of --out: add it as a candidate to CLOUD_BUNDLE_DIR (the kind directory "
        "the replicas serve), gate it against `current` (training.gate) and promote it if it "
        "passes; validate on --scale/--seed or --logs",
    )
    ap.add_argument("--logs", type=Path, default=None, help="with --gated: validate on logs")
    add_validation_arguments(ap)
    ap.add_argument("--timeout-s", type=float, default=30.0, help="deadline of the Redis read")
    ap.add_argument(
        "--release-key", type=Path, default=None,
        help="sign with this release key (default $TANDEM_RELEASE_KEY_FILE; unsigned without "
        "either); add the bundle to a registry with `python -m training.release publish`",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if (args.out is None) == (not args.gated):
        ap.error("give --out DIR or --gated")
    from training.release import signer_from

    signer = signer_from(args.release_key)
    s = load_settings()
    # its own deadline: the serving one (a fraction of a second) is for single-row reads, this
    # reads every row in one MULTI
    client = build_redis(
        s.store.redis_url, socket_timeout_s=args.timeout_s, retries=s.store.redis_retries,
        cluster=s.store.redis_cluster,
    )  # fmt: skip
    try:
        fl = FederatedStore(
            client, s.store.key_prefix, Breaker(open_s=s.store.redis_open_circuit_s)
        )
        if args.gated:
            n_items = load_bundle(s.models.bundle_dir).n_items
            validation = validation_from(args, args.logs, n_items)
            manifest, report = publish_gated(fl, s.models.bundle_dir, validation, signer,
                                             args.tolerance, verifier_from(args))  # fmt: skip
        else:
            manifest = publish(fl, s.models.bundle_dir, args.out, signer)
    except PublishError as exc:
        print(f"not published: {exc}")
        return 2
    finally:
        client.close()
    if args.gated:
        print_report(report)
        return 0 if report.promoted else REFUSED_EXIT
    print(f"published {manifest['version']} (federated version {manifest['federated_version']}) "
          f"to {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
