"""Central retraining from logs: DIN on the log's head, a candidate bundle version, the gate.

`python -m training.ranker.train --logs PATH --registry DIR [--release-key FILE]
    [--epochs N] [--valid-frac 0.2] [--tolerance 0.005]`

The catalogue, retrieval tables and the rows shipped to devices are the served bundle's
(`current` of `<registry>/ranker_bundle`); only the ranker is new, so a replica can hot-swap it
and the devices' re-rankers keep matching. It trains for a fixed number of epochs (no early
stopping: the held-out tail is the gate's, so nothing is selected on it).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from cloud_service.registry.bundle import UNCHECKED, load_bundle
from simulator.logs import Impressions
from tandem_core.artifacts import read_manifest
from tandem_core.models.din import DinConfig, DinRanker
from tandem_core.release import RANKER_BUNDLE, add_version, current_version, resolve, versions
from tandem_core.signing import Signer, Verifier
from training.gate import DEFAULT_TOLERANCE, GateReport, gate
from training.ranker.bundle import federated_start, write_ranker_version
from training.ranker.log_examples import (
    load_logs,
    log_impressions,
    logs_validation,
    negative_sampling,
    split_log,
)
from training.ranker.train import TrainConfig, _epoch, _tensors, with_sampled_negatives


def fit_on_logs(
    split_train: Impressions,
    history: np.ndarray,
    item_category: np.ndarray,
    n_categories: int,
    cfg: TrainConfig,
) -> DinRanker:
    """DIN (ESMM) on clicks + sampled negatives for `cfg.epochs` epochs."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    n_items = len(item_category)
    model = DinRanker(
        DinConfig(n_items=n_items, n_categories=n_categories), torch.from_numpy(item_category)
    )
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    logged = _tensors(split_train, history)
    sampling = torch.from_numpy(negative_sampling(split_train, n_items))
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        data = with_sampled_negatives(logged, sampling, cfg.negatives, gen)
        _epoch(model, opt, data, cfg, gen, epoch, progress=False)
    return model.eval()


def retrain_from_logs(
    logs: Path,
    registry: Path,
    signer: Signer | None,
    cfg: TrainConfig,
    valid_frac: float = 0.2,
    tolerance: float = DEFAULT_TOLERANCE,
    verifier: Verifier | None = None,
) -> GateReport:
    """Train on the logs' head, add the candidate to `<registry>/ranker_bundle` unpromoted,
    gate it on the logs' tail (promoted only if it passes)."""
    kind_dir = registry / RANKER_BUNDLE
    if current_version(kind_dir) is None:
        raise ValueError(
            f"{kind_dir} has no current bundle: training from logs keeps the "
            "served catalogue and device rows; release one with the models job"
        )
    served_dir = resolve(kind_dir)
    served = load_bundle(served_dir, verifier)
    log = load_logs(logs)
    imp = log_impressions(log, served.n_items, np.asarray(served.item_category))
    split = split_log(imp, valid_frac)
    n_categories = int(read_manifest(served_dir)["n_categories"])
    model = fit_on_logs(
        split.train, split.train_history, np.array(served.item_category), n_categories, cfg
    )
    state = federated_start(model)
    digest = hashlib.sha256(b"".join(a.tobytes() for a in state.values())).hexdigest()[:12]
    version = f"din-logs-{digest}"
    fields = {
        "version": version,
        "trained_on": {
            "logs": str(logs),
            "clicks": len(split.train),
            "valid_from": split.cut,
            "epochs": cfg.epochs,
        },
    }
    if version not in versions(kind_dir):
        staged = Path(tempfile.mkdtemp(prefix=".staged-", dir=kind_dir)) / "v"
        try:
            write_ranker_version(staged, model, served_dir, state, fields, RANKER_BUNDLE, signer)
            add_version(kind_dir, staged)  # the --no-promote path: a candidate
        finally:
            shutil.rmtree(staged.parent, ignore_errors=True)
    validation = logs_validation(log, served.n_items, valid_frac, cfg.seed)
    return gate(kind_dir, version, validation, tolerance, verifier or UNCHECKED)
