"""The validation gate: a candidate bundle becomes `current` only if its ranker is not worse.

`python -m training.gate --registry DIR --kind ranker_bundle --candidate V
    (--scale S --seed N | --logs PATH) [--tolerance 0.005] [--public-key FILE]`

Both rankers are scored as serving runs them (ONNX Runtime on each version's own ranker.onnx)
on a validation set neither trained on: the world's held-out validation split of logged
impressions (clicks observed, not the simulator's true probabilities), or the held-out tail by
time of a logs file (`training.ranker.log_examples`). The candidate is promoted when its click
AUC is at least current's minus the tolerance, and at least the best served version's (from
earlier gate reports on the same validation set) minus the tolerance, so a chain of small
losses cannot add up; the report (metric of both, delta, tolerance,
decision, reason) is written to `<kind dir>/gates/<candidate>.json` and printed. A refusal
leaves `current` untouched. Exit status: 0 promoted, 3 refused.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cloud_service.registry.bundle import UNCHECKED, ServingBundle, load_bundle
from cloud_service.registry.bundle_watch import check_compatible
from simulator.metrics import auc
from simulator.scales import SCALES
from simulator.world import WorldConfig
from tandem_core.artifacts import ArtifactIntegrityError, write_atomic
from tandem_core.onnx_session import cpu_session
from tandem_core.release import (
    BUNDLE_KINDS,
    check_version,
    current_version,
    set_current,
    version_dir,
)
from tandem_core.signing import Verifier, build_verifier

if TYPE_CHECKING:
    from simulator.pipeline import HeldOut

DEFAULT_TOLERANCE = 0.005
GATES = "gates"
LOCK = ".gate.lock"
REFUSED_EXIT = 3


@dataclass(frozen=True)
class Validation:
    """Labelled (history, item) pairs to score; `source` says where they come from."""

    history: np.ndarray  # (N, L) int64, PAD = -1, most recent last
    item: np.ndarray  # (N,) int64
    click: np.ndarray  # (N,) 0/1
    source: str


@dataclass(frozen=True)
class GateReport:
    kind_dir: str
    candidate: str
    current: str | None
    candidate_auc: float | None
    current_auc: float | None
    delta: float | None
    tolerance: float
    promoted: bool
    reason: str
    validation: str
    n_examples: int
    seconds: float
    created_at: str


def ranker_auc(onnx: bytes, v: Validation, batch: int = 4096) -> float:
    """Click AUC of the pCTR an ONNX ranker gives each validation pair."""
    session = cpu_session(onnx)
    scores = []
    for lo in range(0, len(v.item), batch):
        feed = {
            "history": np.ascontiguousarray(v.history[lo : lo + batch], dtype=np.int64),
            "candidates": np.ascontiguousarray(v.item[lo : lo + batch, None], dtype=np.int64),
        }
        ctr, _ = session.run(None, feed)
        scores.append(np.asarray(ctr)[:, 0])
    return auc(v.click, np.concatenate(scores))


def _world_key(cfg: WorldConfig) -> tuple[str, str]:
    key = json.dumps(asdict(cfg), sort_keys=True)
    world = hashlib.sha256(key.encode()).hexdigest()[:8]
    return key, f"the world's validation split (world {world}, seed {cfg.seed})"


def held_out_validation(held: HeldOut, cfg: WorldConfig) -> Validation:
    """The validation split of a world's held-out traffic (the ranker trains on the rest)."""
    _, source = _world_key(cfg)
    return Validation(held.valid_history, held.split.valid.item, held.split.valid.click, source)


def save_validation(v: Validation, cfg: WorldConfig, cache: Path) -> None:
    """Keep `v` (of world `cfg`) in `cache`: the models job writes it beside the models it
    trains, so a gate never rebuilds the world's traffic."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        history=v.history.astype(np.int32),
        item=v.item.astype(np.int32),
        click=v.click.astype(np.int8),
        world=np.array(_world_key(cfg)[0]),
    )


def world_validation(cfg: WorldConfig, cache: Path | None = None) -> Validation:
    """The world's held-out validation split, from `cache` (an .npz) when it holds this world's,
    else built (minutes at default scale) and kept there."""
    key, source = _world_key(cfg)
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as f:
            if str(f["world"]) == key:
                return Validation(
                    f["history"].astype(np.int64), f["item"].astype(np.int64), f["click"], source
                )
    from simulator.pipeline import build_experiment

    v = held_out_validation(build_experiment(cfg).held_out, cfg)
    if cache is not None:
        save_validation(v, cfg, cache)
    return v


def _is_auc(x: object) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0  # NaN and ±inf fail both


def best_promoted(kind_dir: Path, v: Validation) -> tuple[str, float] | None:
    """The best AUC a served version scored on this same validation set, from the gate reports
    (each report's candidate if promoted, and the current it was compared with): the bar a
    chain of candidates, each within tolerance of the last, cannot slide below."""
    seen: dict[str, float] = {}
    for f in sorted((kind_dir / GATES).glob("*.json")):
        try:
            r = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(r, dict):
            continue
        if r.get("validation") != v.source or r.get("n_examples") != len(v.item):
            continue
        if r.get("promoted") and _is_auc(r.get("candidate_auc")) and r.get("candidate"):
            seen[str(r["candidate"])] = r["candidate_auc"]
        if r.get("current") and _is_auc(r.get("current_auc")):
            seen[str(r["current"])] = r["current_auc"]
    return max(seen.items(), key=lambda kv: kv[1]) if seen else None


def _decide(
    new: ServingBundle,
    old: ServingBundle | None,
    v: Validation,
    tolerance: float,
    known: dict[str, float],
    best: tuple[str, float] | None,
) -> tuple[bool, str, float | None, float | None]:
    def score(b: ServingBundle) -> float:
        if b.version not in known:
            known[b.version] = ranker_auc(b.ranker_onnx, v)
        return known[b.version]

    if old is None:
        return True, "no current version to compare with", score(new), None
    if new.version == old.version:
        return False, "the candidate is already current", None, None
    try:
        check_compatible(new, old)
    except ArtifactIntegrityError as exc:
        return False, f"replicas would refuse it: {exc}", None, None
    cand, cur = score(new), score(old)
    if cand < cur - tolerance:
        return False, f"AUC {cand:.4f} < current {cur:.4f} − tolerance {tolerance}", cand, cur
    if best is not None and cand < best[1] - tolerance:
        why = f"AUC {cand:.4f} < {best[1]:.4f} of promoted {best[0]} − tolerance {tolerance}"
        return False, why + " (no sliding down a chain of small losses)", cand, cur
    return True, f"AUC {cand:.4f} ≥ current {cur:.4f} − tolerance {tolerance}", cand, cur


def gate(
    kind_dir: Path,
    candidate: str,
    v: Validation,
    tolerance: float = DEFAULT_TOLERANCE,
    verifier: Verifier = UNCHECKED,
    known_auc: dict[str, float] | None = None,
) -> GateReport:
    """Evaluate `candidate` (a version in `kind_dir`) against `current`; promote it if it
    passes; gates of one kind run one at a time (a lock file). The report is written before
    `current` moves. `known_auc` (version → AUC on this
    same validation set) spares scoring a version again when one process gates repeatedly."""
    kind_dir = Path(kind_dir)
    check_version(candidate)  # a name, never a path: the report is written under it
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be finite and ≥ 0, not {tolerance}")
    with _one_gate_at_a_time(kind_dir):
        return _gate(kind_dir, candidate, v, tolerance, verifier, known_auc)


@contextmanager
def _one_gate_at_a_time(kind_dir: Path) -> Iterator[None]:
    """Gates of one kind in turn (an exclusive lock file), so two cannot both read the same
    `current` and both promote."""
    with open(kind_dir / LOCK, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _gate(
    kind_dir: Path,
    candidate: str,
    v: Validation,
    tolerance: float,
    verifier: Verifier,
    known_auc: dict[str, float] | None,
) -> GateReport:
    start = time.perf_counter()
    current = current_version(kind_dir)
    try:
        new = load_bundle(version_dir(kind_dir, candidate), verifier)
        old = load_bundle(version_dir(kind_dir, current), verifier) if current else None
        known = {} if known_auc is None else known_auc
        best = best_promoted(kind_dir, v)
        promoted, reason, cand, cur = _decide(new, old, v, tolerance, known, best)
    except ArtifactIntegrityError as exc:
        promoted, reason, cand, cur = False, f"a version fails its checks: {exc}", None, None
    if promoted and current_version(kind_dir) != current:
        promoted, reason = False, "current moved while the gate ran: gate again"
    report = GateReport(
        str(kind_dir),
        candidate,
        current,
        cand,
        cur,
        None if cand is None or cur is None else cand - cur,
        tolerance,
        promoted,
        reason,
        v.source,
        len(v.item),
        round(time.perf_counter() - start, 2),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    (kind_dir / GATES).mkdir(exist_ok=True)
    write_atomic(
        kind_dir / GATES / f"{candidate}.json",
        json.dumps(asdict(report), indent=2, ensure_ascii=False),
    )
    if promoted:
        set_current(kind_dir, candidate)
    return report


def add_validation_arguments(p: argparse.ArgumentParser, world: bool = True) -> None:
    """The gate's flags, shared by the commands that write a candidate and gate it (`world`:
    also the world to validate on, for commands that have no --scale/--seed of their own)."""
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="AUC the candidate may lose against current and still be promoted",
    )
    p.add_argument(
        "--public-key",
        type=Path,
        default=None,
        help="check signatures with this release public key (default: sha256 only)",
    )
    p.add_argument(
        "--valid-frac", type=float, default=0.2, help="with --logs: the held-out tail by time"
    )
    if world:
        p.add_argument(
            "--scale",
            choices=sorted(SCALES),
            default=None,
            help="validate on this world's held-out validation split",
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--validation-cache",
            type=Path,
            default=None,
            help="an .npz keeping the world's validation split between runs",
        )


def validation_from(a: argparse.Namespace, logs: Path | None, n_items: int) -> Validation:
    if logs is not None:
        from training.ranker.log_examples import load_logs, logs_validation

        return logs_validation(load_logs(logs), n_items, a.valid_frac, a.seed)
    if a.scale is None:
        raise SystemExit("say what to validate on: --scale (a world) or --logs PATH")
    return world_validation(replace(SCALES[a.scale], seed=a.seed), a.validation_cache)


def verifier_from(a: argparse.Namespace) -> Verifier:
    return build_verifier(None, a.public_key, True) if a.public_key else UNCHECKED


def print_report(report: GateReport) -> None:
    print(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    word = "promoted" if report.promoted else "refused"
    print(f"gate: {report.candidate} {word}: {report.reason}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", type=Path, required=True, help="the registry root")
    ap.add_argument(
        "--kind",
        choices=BUNDLE_KINDS,
        default=BUNDLE_KINDS[0],
        help="the kind directory the replicas serve (CLOUD_BUNDLE_DIR)",
    )
    ap.add_argument("--candidate", required=True, help="a version added with --no-promote")
    ap.add_argument(
        "--logs",
        type=Path,
        default=None,
        help="validate on the held-out tail of these logs (file or directory)",
    )
    add_validation_arguments(ap)
    a = ap.parse_args(argv)
    kind_dir = a.registry / a.kind
    n_items = load_bundle(version_dir(kind_dir, a.candidate)).n_items
    report = gate(
        kind_dir, a.candidate, validation_from(a, a.logs, n_items), a.tolerance, verifier_from(a)
    )
    print_report(report)
    return 0 if report.promoted else REFUSED_EXIT


if __name__ == "__main__":
    raise SystemExit(main())
