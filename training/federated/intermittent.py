"""FedAvg vs FedSubAvg vs FedLaAvg on intermittently available devices, held-out AUC per round.

`python -m training.federated.intermittent --scale small --rounds 15 --seeds 0 1 --threads 1`

FedLaAvg (Yan et al., "Distributed Non-Convex Optimization with Sublinear Speedup under
Intermittent Client Availability", arXiv 2002.07399, 2020) targets devices that are online with
different probabilities: plain sampling over-represents the often-online ones. Availability
model (ours, after the paper's setting of clients with differing availability): each device gets
one online probability from `TIERS` (0.1 / 0.3 / 0.6 / 0.9, uniformly, fixed per device and seed);
every round each device is online independently with its probability, and the round's devices
are chosen among the online ones only — at random for FedAvg / FedSubAvg, by the live
aggregator's `most_outdated_first` for FedLaAvg. FedLaAvg's round is the live aggregator's: the
fresh updates merged into the remembered ones (`fedlaavg_merge`), a remembered update reused
only while `version - last_round < max_age` (`Aggregator._memory`, `CLOUD_FL_LAAVG_MAX_AGE`),
and FedSubAvg over the merged set (`defences.aggregate`, algorithm `fedlaavg`). Bare algorithms
(no clipping), to compare the algorithms themselves. The world, devices and local training are
the federated experiment's (`experiment.py`).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloud_service.federated.aggregate import fedlaavg_merge, most_outdated_first
from cloud_service.federated.defences import Defences, aggregate
from cloud_service.settings import FederatedSettings
from simulator.pipeline import Experiment, build_experiment
from simulator.scales import SCALES
from simulator.tables import markdown_table
from tandem_core.federated.update import ModelUpdate
from training.federated.experiment import (
    Buckets,
    FedConfig,
    apply,
    chosen,
    device_data,
    evaluate,
    local_update,
    new_model,
    tensors,
    validate,
)
from training.ranker.train import with_sampled_negatives as with_negatives

TIERS = (0.1, 0.3, 0.6, 0.9)


def online_probabilities(users: np.ndarray, seed: int) -> dict[int, float]:
    """Each device's chance to be online in a round: a tier of `TIERS`, uniformly at random."""
    rng = np.random.default_rng(10_000 + seed)
    return {int(u): float(p) for u, p in zip(users, rng.choice(TIERS, len(users)), strict=True)}


def federate_intermittent(
    exp: Experiment, cfg: FedConfig, algorithm: str, max_age: int, buckets: Buckets, label: str
) -> dict[str, Any]:
    """One run; availability draws depend on the seed only, so every algorithm sees the same
    online sets round by round."""
    model = new_model(exp, cfg.seed)
    categories, data = exp.world.catalog.category, device_data(exp)
    users = np.array(sorted(data))
    online_p = online_probabilities(users, cfg.seed)
    p = np.array([online_p[int(u)] for u in users])
    avail_rng, pick_rng = np.random.default_rng(cfg.seed), np.random.default_rng(cfg.seed + 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    train = exp.held_out.split.train
    clicks = np.bincount(train.item[train.click.astype(bool)], minlength=exp.world.cfg.n_items)
    sampling = torch.from_numpy(np.sqrt(clicks + 1.0))
    latest: dict[str, ModelUpdate] = {}
    last_round: dict[str, int] = {}  # device -> version its latest update was applied at
    curve, picked_tiers, start = [], [], time.perf_counter()
    defences = Defences(algorithm)  # fedlaavg: FedSubAvg over the merged set, as live
    for version in range(cfg.rounds):  # one applied round per version, as in the live store
        online = [f"u{u}" for u in users[avail_rng.random(len(users)) < p]]
        n = min(cfg.devices_per_round, len(online))
        if algorithm == "fedlaavg":
            chosen_ids = most_outdated_first(online, last_round, n)
        else:
            chosen_ids = [str(d) for d in pick_rng.choice(np.array(online), n, replace=False)]
        fresh = []
        for device in chosen_ids:
            own = with_negatives(tensors(exp, data[int(device[1:])]), sampling, cfg.negatives, gen)
            seed = int(torch.randint(1 << 31, (1,), generator=gen))
            fresh.append(local_update(model, own, cfg, seed, device, cfg.local_lr, categories))
            picked_tiers.append(online_p[int(device[1:])])
        used = fresh
        if algorithm == "fedlaavg":  # Aggregator._memory: reuse only updates younger than max_age
            kept = {d: u for d, u in latest.items() if version - last_round[d] < max_age}
            used = list(fedlaavg_merge(kept, fresh).values())
            latest = {u.device_id: u for u in used}
            last_round = {d: version + 1 if d in set(chosen_ids) else last_round[d] for d in latest}
        ids, delta, dense = aggregate(used, fresh[0].row_deltas.shape[1], defences)
        apply(model, ids, delta, dense)
        point = {"round": version + 1, **evaluate(model, exp, buckets),
                 "valid_auc": validate(model, exp), "updates_used": len(used)}  # fmt: skip
        curve.append(point)
        print(f"{label} seed {cfg.seed} round {version + 1}: auc {point['auc']:.4f} "
              f"valid {point['valid_auc']:.4f} used {len(used)}", flush=True)  # fmt: skip
    tiers = {f"{t:g}": picked_tiers.count(t) for t in TIERS}
    return {"label": label, "seed": cfg.seed, "curve": curve, "picked_by_tier": tiers,
            "seconds": time.perf_counter() - start}  # fmt: skip


def runs(max_ages: tuple[int, ...]) -> list[tuple[str, str, int]]:
    """(label, algorithm, max_age) of every run; the deployed age bound first."""
    return [("FedAvg", "fedavg", 0), ("FedSubAvg", "fedsubavg", 0),
            *((f"FedLaAvg, max age {a}", "fedlaavg", a) for a in max_ages)]  # fmt: skip


def tables(results: list[dict[str, Any]]) -> list[str]:
    labels = list(dict.fromkeys(r["label"] for r in results))
    seeds = sorted({r["seed"] for r in results})
    head = ["run", "AUC at the validation-chosen round (per seed)", "mean", "rounds chosen",
            "final-round AUC (per seed)", "picks by online tier 0.1/0.3/0.6/0.9"]  # fmt: skip
    rows = []
    for label in labels:
        rs = [r for r in results if r["label"] == label]
        picks = [chosen(r["curve"]) for r in rs]
        tiers = {t: sum(r["picked_by_tier"][t] for r in rs) for t in rs[0]["picked_by_tier"]}
        rows.append([
            label, " / ".join(f"{p['auc']:.4f}" for p in picks),
            f"{np.mean([p['auc'] for p in picks]):.4f}", " / ".join(str(p["round"]) for p in picks),
            " / ".join(f"{r['curve'][-1]['auc']:.4f}" for r in rs),
            " / ".join(str(v) for v in tiers.values()),
        ])  # fmt: skip
    lines = markdown_table(head, rows)
    n_rounds = max(len(r["curve"]) for r in results)
    per_round = [[str(k + 1), *(
        f"{np.mean([r['curve'][k]['auc'] for r in results if r['label'] == lb]):.4f}"
        for lb in labels)] for k in range(n_rounds)]  # fmt: skip
    lines += ["", f"Held-out AUC per round (mean over seeds {', '.join(map(str, seeds))}):", ""]
    return lines + markdown_table(["round", *labels], per_round)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--devices", type=int, default=FedConfig.devices_per_round)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-ages", type=int, nargs="+",
                    default=[FederatedSettings().laavg_max_age, 1000])  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", type=Path, default=Path("artifacts/federated_intermittent"))
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="only tabulate these intermittent.json files")  # fmt: skip
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        results = [r for path in args.merge for r in json.loads(path.read_text())]
    else:
        torch.set_num_threads(args.threads)
        exp = build_experiment(replace(SCALES[args.scale], seed=0))
        buckets = Buckets.of(exp)
        results = []
        for seed in args.seeds:
            cfg = FedConfig(rounds=args.rounds, devices_per_round=args.devices, seed=seed)
            for label, algorithm, age in runs(tuple(args.max_ages)):
                results.append(federate_intermittent(exp, cfg, algorithm, age, buckets, label))
                (args.out / "intermittent.json").write_text(json.dumps(results, indent=1))
    lines = tables(results)
    (args.out / "intermittent.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
