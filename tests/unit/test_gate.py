"""The validation gate: promoted when not worse than current by more than the tolerance, else
refused with `current` untouched; a report either way; central retraining from a logs file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cloud_service.registry.bundle import load_bundle
from simulator.loaders import BEHAVIOR_CODES, BehaviorLog, write_taobao_user_behavior
from tandem_core.artifacts import ArtifactIntegrityError
from tandem_core.models.din import DinConfig, DinRanker
from tandem_core.onnx_session import cpu_session
from tandem_core.release import (
    RANKER_BUNDLE,
    add_version,
    current_version,
    resolve,
    versions,
)
from tandem_core.signing import Signer
from training.gate import GATES, Validation, gate
from training.ranker.bundle import federated_start, write_ranker_version
from training.ranker.log_examples import log_impressions
from training.tiny import ArtifactDirs, staging


@pytest.fixture()
def kind_dir(tiny_artifacts: ArtifactDirs, tmp_path: Path) -> Path:
    target = tmp_path / "registry" / RANKER_BUNDLE
    shutil.copytree(tiny_artifacts.bundle, target)
    return target


def signer_of(tiny: ArtifactDirs) -> Signer:
    assert tiny.private_key is not None
    return Signer.from_file(tiny.private_key)


def add_candidate(kind_dir: Path, signer: Signer, seed: int, **fields: object) -> str:
    """A random-init DIN (seed) as an unpromoted version of the served bundle."""
    served = load_bundle(kind_dir)
    torch.manual_seed(seed)
    n_categories = int(served.item_category.max()) + 1
    model = DinRanker(
        DinConfig(n_items=served.n_items, n_categories=n_categories),
        torch.from_numpy(np.array(served.item_category)),
    ).eval()
    staged = staging(kind_dir)
    version = f"cand-{seed}"
    write_ranker_version(staged, model, resolve(kind_dir), federated_start(model),
                         {"version": version, **fields}, RANKER_BUNDLE, signer)  # fmt: skip
    add_version(kind_dir, staged)
    shutil.rmtree(staged.parent, ignore_errors=True)
    return version


def labelled_by(onnx: bytes, n_items: int, n: int = 400) -> Validation:
    """Pairs whose clicks are the top half of one ranker's pCTR: that ranker scores AUC 1 on
    them, an unrelated one about 0.5 — a known better and a known worse model."""
    rng = np.random.default_rng(0)
    history = rng.integers(0, n_items, size=(n, 30))
    history[:, :10] = -1
    item = rng.integers(0, n_items, size=n)
    ctr, _ = cpu_session(onnx).run(None, {"history": history, "candidates": item[:, None]})
    score = np.asarray(ctr)[:, 0]
    return Validation(history, item, (score > np.median(score)).astype(np.int8), "test pairs")


def report_of(kind_dir: Path, version: str) -> dict[str, object]:
    return dict(json.loads((kind_dir / GATES / f"{version}.json").read_text()))


def test_a_better_candidate_is_promoted_and_the_report_written(
    kind_dir: Path, tiny_artifacts: ArtifactDirs
) -> None:
    before = current_version(kind_dir)
    version = add_candidate(kind_dir, signer_of(tiny_artifacts), seed=11)
    v = labelled_by(
        load_bundle(kind_dir / "versions" / version).ranker_onnx, tiny_artifacts.n_items
    )
    report = gate(kind_dir, version, v)
    assert report.promoted and current_version(kind_dir) == version
    saved = report_of(kind_dir, version)
    assert saved["current"] == before and saved["promoted"] is True
    assert saved["candidate_auc"] == pytest.approx(1.0)
    assert float(saved["delta"]) > 0.2  # type: ignore[arg-type]


def test_a_worse_candidate_is_refused_and_current_stays(
    kind_dir: Path, tiny_artifacts: ArtifactDirs
) -> None:
    before = current_version(kind_dir)
    history_before = (kind_dir / "history").read_text()
    version = add_candidate(kind_dir, signer_of(tiny_artifacts), seed=12)
    v = labelled_by(load_bundle(kind_dir).ranker_onnx, tiny_artifacts.n_items)  # current's
    report = gate(kind_dir, version, v, tolerance=0.005)
    assert not report.promoted
    assert current_version(kind_dir) == before
    assert (kind_dir / "history").read_text() == history_before
    saved = report_of(kind_dir, version)
    assert saved["promoted"] is False and saved["current_auc"] == pytest.approx(1.0)
    assert float(saved["delta"]) < -0.005 and "<" in str(saved["reason"])  # type: ignore[arg-type]
    # the same loss within a wide tolerance passes: the tolerance is what decides
    assert gate(kind_dir, version, v, tolerance=1.0).promoted
    assert current_version(kind_dir) == version


def test_a_chain_of_small_losses_cannot_slide_below_the_best_served_version(
    kind_dir: Path, tiny_artifacts: ArtifactDirs
) -> None:
    v = labelled_by(load_bundle(kind_dir).ranker_onnx, tiny_artifacts.n_items)  # current: AUC 1
    signer = signer_of(tiny_artifacts)
    worse = add_candidate(kind_dir, signer, seed=14)
    assert gate(kind_dir, worse, v, tolerance=1.0).promoted  # a big loss let through once
    then = add_candidate(kind_dir, signer, seed=15)
    report = gate(kind_dir, then, v, tolerance=0.3)
    assert report.candidate_auc is not None and report.current_auc is not None
    assert report.candidate_auc >= report.current_auc - 0.3  # within tolerance of current ...
    assert not report.promoted and "no sliding" in report.reason  # ... not of the best served
    assert current_version(kind_dir) == worse


def test_a_candidate_replicas_would_refuse_is_not_promoted(
    kind_dir: Path, tiny_artifacts: ArtifactDirs
) -> None:
    before = current_version(kind_dir)
    version = add_candidate(
        kind_dir, signer_of(tiny_artifacts), seed=13, embedding_version="emb-other"
    )
    v = labelled_by(
        load_bundle(kind_dir / "versions" / version).ranker_onnx, tiny_artifacts.n_items
    )
    report = gate(kind_dir, version, v)
    assert not report.promoted and "replicas would refuse" in report.reason
    assert current_version(kind_dir) == before


def tiny_log(path: Path, n_items: int) -> None:
    """Users clicking items in time order; a few buys after their clicks."""
    rng = np.random.default_rng(1)
    n = 600
    user = rng.integers(0, 20, size=n)
    item = rng.integers(0, n_items, size=n)
    ts = np.sort(rng.integers(1_700_000_000, 1_700_100_000, size=n))
    buys = np.arange(0, n, 10)
    log = BehaviorLog(
        np.concatenate([user, user[buys]]), np.concatenate([item, item[buys]]),
        np.zeros(n + len(buys), np.int64),
        np.concatenate([np.zeros(n, np.int8), np.full(len(buys), BEHAVIOR_CODES["buy"], np.int8)]),
        np.concatenate([ts, ts[buys] + 5]),
    )  # fmt: skip
    write_taobao_user_behavior(path, log)


def test_log_impressions_label_purchases_after_the_click_and_refuse_foreign_ids() -> None:
    pv, buy = BEHAVIOR_CODES["pv"], BEHAVIOR_CODES["buy"]
    log = BehaviorLog(
        np.array([1, 1, 1, 2]), np.array([3, 3, 4, 3]), np.zeros(4, np.int64),
        np.array([pv, buy, pv, pv], np.int8), np.array([10, 20, 30, 40]),
    )  # fmt: skip
    imp = log_impressions(log, 5, np.arange(5))
    assert imp.item.tolist() == [3, 4, 3] and imp.purchase.tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="outside the served catalogue"):
        log_impressions(log, 4, np.arange(4))


def test_training_from_a_logs_file_writes_a_candidate_and_gates_it(
    kind_dir: Path, tiny_artifacts: ArtifactDirs, tmp_path: Path
) -> None:
    from training.ranker.train import main

    logs = tmp_path / "user_behavior.csv"
    tiny_log(logs, tiny_artifacts.n_items)
    before = current_version(kind_dir)
    code = main(["--logs", str(logs), "--registry", str(kind_dir.parent), "--epochs", "1",
                 "--release-key", str(tiny_artifacts.private_key),
                 "--public-key", str(tiny_artifacts.public_key)])  # fmt: skip
    (candidate,) = [v for v in versions(kind_dir) if v.startswith("din-logs-")]
    saved = report_of(kind_dir, candidate)
    assert saved["current"] == before and "logs tail" in str(saved["validation"])
    assert saved["candidate_auc"] is not None and saved["current_auc"] is not None
    assert code == (0 if saved["promoted"] else 3)
    assert current_version(kind_dir) == (candidate if saved["promoted"] else before)
    served = load_bundle(kind_dir / "versions" / candidate)
    assert served.embedding_version == load_bundle(kind_dir / "versions" / before).embedding_version  # type: ignore[operator]


def test_hostile_gate_inputs_are_refused_and_corrupt_reports_ignored(
    kind_dir: Path, tiny_artifacts: ArtifactDirs
) -> None:
    v = labelled_by(load_bundle(kind_dir).ranker_onnx, tiny_artifacts.n_items)
    before = current_version(kind_dir)
    with pytest.raises(ArtifactIntegrityError):
        gate(kind_dir, "../../escaped", v)  # a name, never a path
    assert not (kind_dir.parent.parent / "escaped.json").exists()
    version = add_candidate(kind_dir, signer_of(tiny_artifacts), seed=16)
    with pytest.raises(ValueError, match="tolerance"):
        gate(kind_dir, version, v, tolerance=float("nan"))  # NaN would pass every comparison
    (kind_dir / GATES).mkdir(exist_ok=True)
    (kind_dir / GATES / "a.json").write_text("[1, 2]")
    (kind_dir / GATES / "b.json").write_text('{"promoted": true, "candidate_auc": 0.5}')
    forged = {"promoted": True, "candidate": "x", "candidate_auc": float("inf"),
              "validation": v.source, "n_examples": len(v.item)}  # fmt: skip
    (kind_dir / GATES / "c.json").write_text(json.dumps(forged))
    report = gate(kind_dir, version, v, tolerance=1.0)  # none of them sets a bar
    assert report.promoted and current_version(kind_dir) == version != before
