"""Federated training of the DIN ranker in the world: FedSubAvg vs FedAvg vs central, per round.

`python -m training.federated.experiment --scale small --rounds 40 --seeds 0 1 2`

Users are devices. Each round samples devices; each runs the agents' trainer (`train_local`) on
its own training impressions only (raw behaviour never leaves it), touching only its submodel:
the item rows (embedding + per-item bias) of the items in its data and the dense layers. The
server applies the aggregate of the deltas (the same functions the aggregator process uses).
AUC is measured every round on the held-out split (last 20 % of sessions by time), overall and
on two item buckets (`Buckets`); the round reported is chosen on the validation split. Central
training of the same model on the same data is the reference. A poisoning run makes 10 % of
devices push their update scaled by −10, with and without the defences (median-norm clipping,
trimmed mean).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloud_service.federated.defences import Defences, aggregate
from device_agent.trainer.local_model import LocalTraining, train_local
from simulator.metrics import auc
from simulator.pipeline import Experiment, build_experiment
from simulator.scales import SCALES
from simulator.tables import markdown_table
from tandem_core.federated.privacy import cover_pulled
from tandem_core.federated.update import ModelUpdate
from tandem_core.models.din import DinConfig, DinRanker, federated_dense, federated_rows
from training.ranker.scoring import rank
from training.ranker.train import TrainConfig, train_ranker
from training.ranker.train import with_sampled_negatives as with_negatives

# (device id, its true ids) -> the ids it pulls; (updates, row dim) -> (ids, row delta, dense)
Pad = Callable[[str, np.ndarray], np.ndarray]
Combine = Callable[[list[ModelUpdate], int], tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]
KEYS = (("auc", "held-out AUC"), ("cold_auc", "cold items"), ("tail_auc", "tail items"))
METRICS = ("auc", "cold_auc", "tail_auc", "valid_auc")


@dataclass(frozen=True)
class FedConfig:
    rounds: int = 40
    devices_per_round: int = 60
    local_epochs: int = 2
    # the device's trainer (device_agent.trainer.local_model): plain SGD at a constant rate, the
    # rate chosen among 0.2 / 0.5 / 1.0 and a 0.9^round decay on validation AUC (docs/benchmarks.md)
    client_opt: str = "sgd"
    local_lr: float = 0.5
    lr_decay: float = 1.0  # the local rate × lr_decay^round
    negatives: int = 1  # sampled unclicked items per impression, as in central training
    batch_size: int = 64
    malicious_share: float = 0.0
    attack_scale: float = -10.0
    seed: int = 0


def device_data(exp: Experiment) -> dict[int, np.ndarray]:
    """Row indices of each user's training impressions (what stays on that phone)."""
    users = exp.held_out.split.train.user
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    return {int(users[g[0]]): g for g in np.split(order, bounds)}


def tensors(exp: Experiment, idx: np.ndarray) -> list[torch.Tensor]:
    tr, hist = exp.held_out.split.train, exp.held_out.train_history
    return [
        torch.from_numpy(hist[idx].astype(np.int64)),
        torch.from_numpy(tr.item[idx].astype(np.int64)),
        torch.from_numpy(tr.position[idx].astype(np.int64)),
        torch.from_numpy(tr.click[idx].astype(np.float32)),
        torch.from_numpy(tr.purchase[idx].astype(np.float32)),
    ]


def local_update(
    model: DinRanker, data: list[torch.Tensor], cfg: FedConfig, seed: int, device_id: str,
    lr: float, categories: np.ndarray, pad: Pad | None = None,
) -> ModelUpdate:  # fmt: skip
    """The device's own step (device_agent.trainer.train_local, the code the agents run): pull
    the rows its data touches (or, with `pad`, its padded id set: true ids it drops are not
    trained, decoys get zero deltas) and the dense layers, train, return the deltas."""
    arrays = dict(zip(("history", "item", "position", "click", "purchase"),
                      (t.numpy() for t in data), strict=True))  # fmt: skip
    hist = arrays["history"]
    ids = np.unique(np.concatenate([hist[hist >= 0], arrays["item"]]))
    if pad is not None:
        ids = np.unique(pad(device_id, ids))
    rows = federated_rows(model)[ids]
    training = LocalTraining(cfg.local_epochs, lr, cfg.batch_size, cfg.client_opt)
    r = train_local(ids, rows, federated_dense(model), categories[ids], arrays, training, seed)
    if pad is not None:  # the update covers exactly the pulled set, as the agent's push does
        _, deltas, counts = cover_pulled(ids, r.item_ids, r.row_deltas, r.row_counts)
        r = replace(r, item_ids=ids, row_deltas=deltas, row_counts=counts)
    return replace(r, device_id=device_id)


def apply(
    model: DinRanker, ids: np.ndarray, delta: np.ndarray, dense: dict[str, np.ndarray]
) -> None:
    with torch.no_grad():
        d_emb = model.item_embedding.weight.shape[1]
        t_ids = torch.from_numpy(ids)
        model.item_embedding.weight[t_ids] += torch.from_numpy(delta[:, :d_emb])
        model.item_bias.weight[t_ids] += torch.from_numpy(delta[:, d_emb:])
        params = dict(model.named_parameters())
        for name, d in dense.items():
            params[name].add_(torch.from_numpy(d))


@dataclass(frozen=True)
class Buckets:
    """Item groups the AUC is also reported on, both defined from training data only.

    cold: the bottom popularity quintile of the catalogue by training clicks. In the small world
    every one of these items has zero training clicks (most were never shown), so no model can
    learn their rows; their test impressions are few and the AUC on them is noisy.
    tail: the least-clicked items that together carry the first 20 % of training impressions
    (ties by id) — items shown but rarely clicked, whose rows few devices hold: where FedAvg's
    shrinkage and FedSubAvg's correction differ.
    """

    cold: np.ndarray
    tail: np.ndarray

    @classmethod
    def of(cls, exp: Experiment) -> Buckets:
        train, n = exp.held_out.split.train, exp.world.cfg.n_items
        clicks = np.bincount(train.item[train.click.astype(bool)], minlength=n)
        order = np.argsort(clicks, kind="stable")
        shown = np.cumsum(np.bincount(train.item, minlength=n)[order])
        return cls(cold=order[: n // 5], tail=order[: np.searchsorted(shown, 0.2 * shown[-1]) + 1])

    def sizes(self, exp: Experiment) -> dict[str, int]:
        test = exp.held_out.split.test
        out = {}
        for name, items in (("cold", self.cold), ("tail", self.tail)):
            mask = np.isin(test.item, items)
            out[f"{name}_items"], out[f"{name}_impressions"] = len(items), int(mask.sum())
            out[f"{name}_clicks"] = int(test.click[mask].sum())
        return out


def evaluate(model: DinRanker, exp: Experiment, buckets: Buckets) -> dict[str, float]:
    test, hist = exp.held_out.split.test, exp.held_out.test_history
    model.eval()
    ctr, _ = rank(model, hist, test.item[:, None])
    out = {"auc": auc(test.click, ctr[:, 0])}
    for name, items in (("cold", buckets.cold), ("tail", buckets.tail)):
        mask = np.isin(test.item, items)
        out[f"{name}_auc"] = auc(test.click[mask], ctr[mask, 0])
    return out


def validate(model: DinRanker, exp: Experiment) -> float:
    """AUC on the validation split: picks the round to report, as central training's early
    stopping does, so the test split is never used for a choice."""
    valid, hist = exp.held_out.split.valid, exp.held_out.valid_history
    model.eval()
    ctr, _ = rank(model, hist, valid.item[:, None])
    return auc(valid.click, ctr[:, 0])


def new_model(exp: Experiment, seed: int) -> DinRanker:
    torch.manual_seed(seed)
    cfg = exp.world.cfg
    return DinRanker(
        DinConfig(n_items=cfg.n_items, n_categories=cfg.n_categories),
        torch.from_numpy(exp.world.catalog.category),
    )


def federate(
    exp: Experiment, cfg: FedConfig, defences: Defences, buckets: Buckets, label: str,
    pad: Pad | None = None, combine: Combine | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One federated run; `pad` pads each device's pull (index privacy), `combine` replaces the
    plain aggregate (e.g. secure aggregation, training/federated/secure_quality.py)."""
    model = new_model(exp, cfg.seed)
    categories = exp.world.catalog.category
    data = device_data(exp)
    users = np.array(sorted(data))
    rng = np.random.default_rng(cfg.seed)
    malicious = set(
        rng.choice(users, int(cfg.malicious_share * len(users)), replace=False).tolist()
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    train = exp.held_out.split.train
    clicks = np.bincount(train.item[train.click.astype(bool)], minlength=exp.world.cfg.n_items)
    # the catalogue's public popularity, as the cloud publishes it; no device's data
    sampling = torch.from_numpy(np.sqrt(clicks + 1.0))
    curve, pulled_rows = [], []
    start = time.perf_counter()
    for r in range(cfg.rounds):
        updates = []
        for user in rng.choice(users, min(cfg.devices_per_round, len(users)), replace=False):
            own = with_negatives(tensors(exp, data[int(user)]), sampling, cfg.negatives, gen)
            lr = cfg.local_lr * cfg.lr_decay**r
            seed = int(torch.randint(1 << 31, (1,), generator=gen))
            u = local_update(model, own, cfg, seed, f"u{user}", lr, categories, pad)
            pulled_rows.append(len(u.item_ids))
            if int(user) in malicious:
                u = replace(
                    u, row_deltas=u.row_deltas * cfg.attack_scale,
                    dense_deltas={k: v * cfg.attack_scale for k, v in u.dense_deltas.items()},
                )  # fmt: skip
            updates.append(u)
        dim = updates[0].row_deltas.shape[1]
        ids, delta, dense = (
            combine(updates, dim) if combine is not None else aggregate(updates, dim, defences)
        )
        apply(model, ids, delta, dense)
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            curve.append({"round": r + 1, **dict.fromkeys(METRICS, math.nan)})
            print(f"{label} round {r + 1}: diverged (non-finite weights)", flush=True)
            break
        point = {"round": r + 1, **evaluate(model, exp, buckets), "valid_auc": validate(model, exp)}
        curve.append(point)
        print(f"{label} round {r + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in point.items()
                                                   if k != "round"), flush=True)  # fmt: skip
    dim = federated_rows(model).shape[1]
    dense_bytes = 4 * sum(v.size for v in federated_dense(model).values())
    return {
        "label": label, "rounds": cfg.rounds, "curve": curve,
        "seconds": time.perf_counter() - start,
        "submodel_bytes": float(np.mean(pulled_rows)) * dim * 4 + dense_bytes,
        "full_bytes": exp.world.cfg.n_items * dim * 4 + dense_bytes,
    }  # fmt: skip


def chosen(curve: list[dict[str, float]]) -> dict[str, float]:
    """The round validation AUC picks (as central training's early stopping; never the test);
    the last point when the run diverged before any round scored."""
    scored = [p for p in curve if math.isfinite(p.get("valid_auc", math.nan))]
    return max(scored, key=lambda p: p["valid_auc"]) if scored else curve[-1]


def fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "diverged"


def run(
    out: Path, scale: str, cfg: FedConfig, attack_rounds: int = 10, seeds: tuple[int, ...] = (0,)
) -> dict[str, object]:
    """Central vs FedSubAvg vs FedAvg for each training seed (the world stays seed 0); on the
    first seed also Adam on the devices (the earlier setting) and the poisoning runs."""
    torch.set_num_threads(2)
    exp = build_experiment(replace(SCALES[scale], seed=0))
    buckets = Buckets.of(exp)
    per_seed: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        c = replace(cfg, seed=seed)
        central, _ = train_ranker(exp, TrainConfig(epochs=2, seed=seed))
        scores = evaluate(central, exp, buckets)
        print(f"central seed {seed}: {scores}", flush=True)
        pair = [federate(exp, c, Defences("fedsubavg"), buckets, "FedSubAvg"),
                federate(exp, c, Defences("fedavg"), buckets, "FedAvg")]  # fmt: skip
        per_seed.append({"seed": seed, "central": scores,
                         **{r["label"]: chosen(r["curve"]) for r in pair}})  # fmt: skip
        runs = runs or pair
    first = replace(cfg, seed=seeds[0])
    # the devices' earlier setting, with its own tuned schedule (0.01 × 0.9^round)
    adam = replace(first, client_opt="adam", local_lr=0.01, lr_decay=0.9)
    runs.append(federate(exp, adam, Defences("fedsubavg"), buckets, "FedSubAvg, Adam on devices"))
    attacked = replace(first, malicious_share=0.1, rounds=min(cfg.rounds, attack_rounds))
    defended = Defences("fedsubavg", trim=0.1, clip_median=True)  # min_contributors 1: cold rows
    runs.append(federate(exp, attacked, Defences("fedsubavg"), buckets,
                         "FedSubAvg, 10 % attackers"))  # fmt: skip
    runs.append(federate(exp, attacked, defended, buckets, "FedSubAvg + defences, 10 % attackers"))
    result: dict[str, Any] = {
        "central": per_seed[0]["central"], "runs": runs, "seeds": per_seed,
        "buckets": buckets.sizes(exp), "config": cfg.__dict__, "scale": scale,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "federated.json").write_text(json.dumps(result, indent=1))
    write_outputs(result, out)
    return result


def write_outputs(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KEYS), figsize=(15, 4))
    for (key, title), ax in zip(KEYS, axes, strict=True):
        for run in result["runs"]:
            rounds = [p["round"] for p in run["curve"]]
            ax.plot(rounds, [p[key] for p in run["curve"]], label=run["label"])
        ax.axhline(result["central"][key], color="black", linestyle="--", label="central")
        ax.set_title(title)
        ax.set_xlabel("round")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "federated_auc.png", dpi=110)
    plt.close(fig)
    early = min(r["rounds"] for r in result["runs"])  # the poisoning runs are shorter
    head = ["run", "rounds", "round chosen on validation", "AUC there", "cold AUC there",
            "tail AUC there", "final AUC", f"AUC at round {early}",
            "submodel / full bytes"]  # fmt: skip
    c = result["central"]
    rows = [["central (≤ 2 epochs, Adam, early stop on validation)", "", "",
             *(f"{c[k]:.4f}" for k, _ in KEYS), "", "", ""]]  # fmt: skip
    for run in result["runs"]:
        curve = run["curve"]
        pick, last, at = chosen(curve), curve[-1], curve[min(early, len(curve)) - 1]
        scores = [pick["auc"], pick["cold_auc"], pick["tail_auc"], last["auc"], at["auc"]]
        rows.append([run["label"], str(run["rounds"]), str(pick["round"]), *map(fmt, scores),
                     f"{run['submodel_bytes']:,.0f} / {run['full_bytes']:,.0f}"])  # fmt: skip
    lines = markdown_table(head, rows)
    lines += ["", *seed_table(result["seeds"]), "", bucket_line(result.get("buckets", {}))]
    (out / "federated.md").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


def seed_table(per_seed: list[dict[str, Any]]) -> list[str]:
    """AUC / cold / tail at the validation-chosen round per training seed, the mean, and the
    gap of each federated run to central training (relative, on overall AUC)."""
    names = ["central", *(k for k in per_seed[0] if k not in ("seed", "central"))]
    head = ["seed", *(f"{n}: AUC / cold / tail" for n in names)]

    def cell(p: dict[str, float]) -> str:
        return " / ".join(f"{p[k]:.4f}" for k, _ in KEYS)

    mean = {n: {k: float(np.mean([r[n][k] for r in per_seed])) for k, _ in KEYS} for n in names}
    rows = [[str(r["seed"]), *(cell(r[n]) for n in names)] for r in per_seed]
    lines = markdown_table(head, [*rows, ["mean", *(cell(mean[n]) for n in names)]])
    gaps = [f"{n} {100 * (1 - mean[n]['auc'] / mean['central']['auc']):.2f} %" for n in names[1:]]
    return [*lines, "", "Mean gap to central AUC: " + ", ".join(gaps) + "."]


def bucket_line(sizes: dict[str, int]) -> str:
    if not sizes:
        return ""
    return (f"Test impressions (clicks): cold {sizes['cold_impressions']:,} "
            f"({sizes['cold_clicks']:,}) on {sizes['cold_items']:,} items; tail "
            f"{sizes['tail_impressions']:,} ({sizes['tail_clicks']:,}) on "
            f"{sizes['tail_items']:,} items.")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--rounds", type=int, default=FedConfig.rounds)
    ap.add_argument("--devices", type=int, default=FedConfig.devices_per_round)
    ap.add_argument("--attack-rounds", type=int, default=10, help="rounds of the poisoning runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    ap.add_argument("--out", type=Path, default=Path("artifacts/federated"))
    ap.add_argument("--replot", action="store_true", help="only redraw from OUT/federated.json")
    args = ap.parse_args(argv)
    if args.replot:
        write_outputs(json.loads((args.out / "federated.json").read_text()), args.out)
        return 0
    cfg = FedConfig(rounds=args.rounds, devices_per_round=args.devices)
    run(args.out, args.scale, cfg, args.attack_rounds, tuple(args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
