"""What privacy costs the federated ranker: FedSubAvg plain vs secure aggregation vs SecAgg + RR.

`python -m training.federated.secure_quality --rounds 20 --seeds 0 1 2`

The federated experiment's world and devices (training/federated/experiment.py), three arms per
training seed: plain FedSubAvg (the aggregator's `aggregate`); the same cohort through the real
secure-aggregation protocol (tandem_core/federated/secagg: X25519, Shamir shares, masks,
quantisation into Z_2^32; a share of each round's devices drops out after sharing keys, the
costly case) with the secure layout's clipping; and that plus permanent randomized response on
every pull (RAPPOR-style fixed bits, tandem_core/federated/privacy.py `permanent_pad`: a true
id is pulled with p, a pool id with q; the pool = the items the device was shown ∪ a public top
set by published popularity). Held-out AUC at the round validation picks, as the experiment.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloud_service.federated.defences import Defences
from cloud_service.federated.secure_rounds import threshold
from simulator.pipeline import Experiment, build_experiment
from simulator.scales import SCALES
from simulator.tables import markdown_table
from tandem_core.federated import secure_update
from tandem_core.federated.privacy import epsilon, permanent_pad
from tandem_core.federated.secagg import SecAggClient, SecAggParams, SecAggServer
from tandem_core.federated.secure_update import SecureParams
from tandem_core.federated.update import ModelUpdate
from training.federated.experiment import (
    Buckets,
    Combine,
    FedConfig,
    Pad,
    chosen,
    device_data,
    federate,
)

PUBLIC_POOL = 2000  # the most popular items, by the popularity the cloud publishes


def secure_combine(dropout: float, seed: int, leak: dict[str, float] | None = None) -> Combine:
    """The round's aggregate through the secure-aggregation protocol, in one process. `leak`
    counts what the sums alone give away (a curious server's view): a pulled row whose
    contributor sum is 0 (every holder's id a decoy) or equals its holders (every holder's id
    true) reveals each holder's bit for that row exactly, whatever ε said."""
    rng = np.random.default_rng(seed)

    def combine(
        updates: list[ModelUpdate], dim: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        n = len(updates)
        shapes = {k: tuple(v.shape) for k, v in sorted(updates[0].dense_deltas.items())}
        params = SecureParams(
            threshold(n, math.ceil(0.5 * n)), dim + 2, secure_update.dense_length(shapes),
            16.0, 64.0, n, 64, 1000, 0,
        )  # fmt: skip
        sp = SecAggParams("q", params.threshold, params.row_width, params.dense_len)
        held = {u.device_id: np.asarray(u.item_ids, np.int64) for u in updates}
        server = SecAggServer(sp, held)
        clients = {d: SecAggClient(d, sp) for d in held}
        roster = server.collect_adverts([c.advertise() for c in clients.values()])
        inbox = server.route_shares([s for c in clients.values() for s in c.share_keys(roster)])
        gone = set(rng.choice(sorted(held), int(dropout * n), replace=False).tolist())
        inputs = []
        for u in updates:
            if u.device_id in gone:
                continue
            rows, dense = secure_update.encode(u, shapes, params, rng)
            inputs.append(clients[u.device_id].masked_input(
                rows, held[u.device_id], dense, inbox[u.device_id],
                server.intersections_for(u.device_id),
            ))  # fmt: skip
        survivors = server.collect_masked(inputs)
        dropped = sorted(set(held) - set(survivors))
        result = server.unmask([clients[d].unmask(survivors, dropped) for d in survivors])
        total = secure_update.decode(
            result.row_ids, result.row_sums, result.dense, result.holders, shapes, params,
            len(result.survivors),
        )  # fmt: skip
        if leak is not None:
            exposed = (total.contributors == 0) | (total.contributors == result.holders)
            pos = {int(i): k for k, i in enumerate(result.row_ids.tolist())}
            for u in updates:
                if u.device_id not in result.survivors:
                    continue
                at = np.array([pos[int(i)] for i in u.item_ids], np.int64)
                true = np.asarray(u.row_counts) > 0
                leak["true"] += int(true.sum())
                leak["true_exposed"] += int((true & exposed[at]).sum())
                leak["decoy"] += int((~true).sum())
                leak["decoy_exposed"] += int((~true & exposed[at]).sum())
                leak["alone"] += int((result.holders[at] == 1).sum())
                leak["rows"] += len(at)
        return secure_update.fedsubavg_step(total, math.inf, 1)

    return combine


def permanent_rr(exp: Experiment, keep: float, decoy: float, seed: int) -> tuple[Pad, dict]:
    """Each device's pull under permanent RR, its bits fixed the first time they are released."""
    train = exp.held_out.split.train
    clicks = np.bincount(train.item[train.click.astype(bool)], minlength=exp.world.cfg.n_items)
    public = np.argsort(-clicks, kind="stable")[:PUBLIC_POOL]
    shown = {u: np.unique(train.item[idx]) for u, idx in device_data(exp).items()}
    state: dict[str, tuple[bytes, np.ndarray, np.ndarray]] = {}
    stats = {"outside_pool": 0, "withheld": 0, "true": 0, "pulled": 0}
    keys = np.random.default_rng(seed)

    def pad(device: str, true_ids: np.ndarray) -> np.ndarray:
        key, released, bits = state.get(device, (keys.bytes(32), np.empty(0, np.int64),
                                                 np.empty(0, bool)))  # fmt: skip
        pool = np.union1d(shown[int(device[1:])], public)
        pull = permanent_pad(key, released, bits, true_ids, pool, keep, decoy)
        order = np.argsort(np.concatenate([released, pull.new_ids]), kind="stable")
        all_ids = np.concatenate([released, pull.new_ids])[order]
        all_bits = np.concatenate([bits, pull.new_pulled])[order]
        state[device] = (key, all_ids, all_bits)
        stats["outside_pool"] += pull.outside_pool
        stats["withheld"] += pull.withheld
        stats["true"] += len(true_ids)
        stats["pulled"] += len(pull.ids)
        return pull.ids

    return pad, stats


def run(scale: str, cfg: FedConfig, seeds: list[int], keep: float, decoy: float,
        dropout: float) -> dict[str, Any]:  # fmt: skip
    torch.set_num_threads(2)
    exp = build_experiment(replace(SCALES[scale], seed=0))
    buckets = Buckets.of(exp)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        c = replace(cfg, seed=seed)
        plain = federate(exp, c, Defences("fedsubavg"), buckets, "FedSubAvg")
        sec = federate(exp, c, Defences("fedsubavg"), buckets, "SecAgg",
                       combine=secure_combine(dropout, seed))  # fmt: skip
        pad, stats = permanent_rr(exp, keep, decoy, seed)
        leak = dict.fromkeys(("true", "true_exposed", "decoy", "decoy_exposed", "alone", "rows"),
                             0.0)  # fmt: skip
        both = federate(exp, c, Defences("fedsubavg"), buckets, "SecAgg + RR", pad=pad,
                        combine=secure_combine(dropout, seed, leak))  # fmt: skip
        rows.append({
            "seed": seed, **{r["label"]: chosen(r["curve"]) for r in (plain, sec, both)},
            "seconds": {r["label"]: r["seconds"] for r in (plain, sec, both)},
            "rr": {k: v / max(stats["true"], 1) for k, v in stats.items()},
            "sum_leak": {
                "true_exposed": leak["true_exposed"] / max(leak["true"], 1),
                "decoy_exposed": leak["decoy_exposed"] / max(leak["decoy"], 1),
                "rows_held_alone": leak["alone"] / max(leak["rows"], 1),
            },
        })  # fmt: skip
    return {"scale": scale, "rounds": cfg.rounds, "keep": keep, "decoy": decoy,
            "epsilon": epsilon(keep, decoy), "dropout": dropout, "seeds": rows}  # fmt: skip


def table(result: dict[str, Any]) -> str:
    arms = ("FedSubAvg", "SecAgg", "SecAgg + RR")
    head = ["seed", *(f"{a}: AUC / tail / round" for a in arms), "RR: pulled / true ids",
            "true ids withheld / outside pool",
            "sums expose: trained rows / decoys / rows held alone"]  # fmt: skip
    body = []
    for r in result["seeds"]:
        cells = [f"{r[a]['auc']:.4f} / {r[a]['tail_auc']:.4f} / {int(r[a]['round'])}" for a in arms]
        rr = r["rr"]
        sl = r["sum_leak"]
        body.append([str(r["seed"]), *cells, f"{rr['pulled']:.2f}",
                     f"{rr['withheld']:.3f} / {rr['outside_pool']:.3f}",
                     f"{sl['true_exposed']:.3f} / {sl['decoy_exposed']:.3f} / "
                     f"{sl['rows_held_alone']:.3f}"])  # fmt: skip
    means = [np.mean([r[a]["auc"] for r in result["seeds"]]) for a in arms]
    body.append(["mean", *(f"{m:.4f}" for m in means), "", "", ""])
    return "\n".join(markdown_table(head, body))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--devices", type=int, default=FedConfig.devices_per_round)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--keep-prob", type=float, default=0.9)
    ap.add_argument("--decoy-prob", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1, help="share of each round dropping out")
    ap.add_argument("--out", type=Path, default=Path("artifacts/federated_secure"))
    a = ap.parse_args(argv)
    start = time.perf_counter()
    cfg = replace(FedConfig(), rounds=a.rounds, devices_per_round=a.devices)
    result = run(a.scale, cfg, a.seeds, a.keep_prob, a.decoy_prob, a.dropout)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "secure_quality.json").write_text(json.dumps(result, indent=1, default=float))
    print(f"ε per item (lifetime, permanent RR) {result['epsilon']:.2f}; dropout {a.dropout}")
    print(table(result))
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
