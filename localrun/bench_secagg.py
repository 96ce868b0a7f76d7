"""Secure aggregation of sparse submodels: bytes per device vs a plain push, server and client time.

`python -m localrun.bench_secagg --cohorts 8 32 128 --seed 0 1 2`

One process simulates whole rounds of `tandem_core.federated.secagg` (every device and the
server, no network). Sizes are the project's: the DIN ranker's federated layout (a row of
item_dim + 2 bias = 34 floats, every other layer dense; secure_update adds a count and a
trained flag per row and the weight to the dense segment), and each device's row set is what a
device of the federated experiment pulls in the small world (its training impressions' items
and click histories plus one popularity-sampled negative per impression, as `federate` does;
no decoy padding, as in that experiment). Dropouts leave after ShareKeys (the costly case: the
server rebuilds their pairwise masks). Byte counts are the messages' own `to_bytes` sizes; the
intersections are counted as 8-byte ids (what `intersections_for` returns) and, beside, as a
bitmap over the receiver's rows. Times are single-threaded wall clock on this machine.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np

from simulator.tables import markdown_table
from tandem_core.federated.secagg import SecAggClient, SecAggParams, SecAggResult, SecAggServer

BIAS_AND_FLAGS = 2  # secure_update: count and trained flag per row
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    dim: int  # floats per federated row (embedding + biases)
    dense: int  # dense parameters
    pulls: list[np.ndarray]  # each device's sorted row ids
    catalogue: int


def experiment_sizes(seed: int) -> Sizes:
    """The small world's devices and their pull sets, the ranker's row width and dense size."""
    import torch

    from simulator.pipeline import build_experiment
    from simulator.scales import SCALES
    from tandem_core.models.din import DinConfig, DinRanker, federated_dense, federated_rows
    from training.federated.experiment import device_data

    cfg = SCALES["small"]
    exp = build_experiment(cfg)
    model = DinRanker(DinConfig(n_items=cfg.n_items, n_categories=cfg.n_categories),
                      torch.from_numpy(exp.world.catalog.category))  # fmt: skip
    dim = federated_rows(model).shape[1]
    dense = sum(v.size for v in federated_dense(model).values())
    train, hist = exp.held_out.split.train, exp.held_out.train_history
    clicks = np.bincount(train.item[train.click.astype(bool)], minlength=cfg.n_items)
    sampling = np.sqrt(clicks + 1.0)
    sampling /= sampling.sum()
    rng = np.random.default_rng(seed)
    pulls = []
    for idx in device_data(exp).values():
        h = hist[idx]
        negatives = rng.choice(cfg.n_items, len(idx), p=sampling)  # one per impression
        pulls.append(np.unique(np.concatenate([h[h >= 0], train.item[idx], negatives])))
    return Sizes(dim, dense, pulls, cfg.n_items)


class Tally:
    """Bytes each device sends and receives, by message, and each side's compute time."""

    def __init__(self) -> None:
        self.bytes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.client_s: dict[str, float] = defaultdict(float)
        self.server_s = 0.0

    def client(self, u: str, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        t0 = time.perf_counter()
        out = step(*args, **kwargs)
        self.client_s[u] += time.perf_counter() - t0
        return out

    def server(self, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        t0 = time.perf_counter()
        out = step(*args, **kwargs)
        self.server_s += time.perf_counter() - t0
        return out


def run_round(sizes: Sizes, n: int, dropout: float, seed: int) -> dict[str, float]:
    """One whole round; every figure per device is the mean over the devices whose input is in
    the sum (a device that goes through all four stages)."""
    rng = np.random.default_rng(seed)
    ids = [f"device-{k:04d}" for k in range(n)]
    picked = rng.choice(len(sizes.pulls), n, replace=False)
    held = {u: sizes.pulls[i].astype(np.int64) for u, i in zip(ids, picked, strict=True)}
    width, dense_len = sizes.dim + BIAS_AND_FLAGS, sizes.dense + 1
    params = SecAggParams(f"bench-{seed}", n // 2 + 1, width, dense_len)
    rows = {u: rng.integers(0, 2**32, (len(held[u]), width), dtype=np.uint32) for u in ids}
    dense = {u: rng.integers(0, 2**32, dense_len, dtype=np.uint32) for u in ids}
    gone = set(rng.choice(ids, round(dropout * n), replace=False).tolist()) if dropout else set()
    tally, server = Tally(), SecAggServer(params, held)
    clients = {u: tally.client(u, SecAggClient, u, params) for u in ids}
    adverts = [tally.client(u, clients[u].advertise) for u in ids]
    roster = tally.server(server.collect_adverts, adverts)
    roster_bytes = sum(len(a.to_bytes()) for a in roster)
    shares = {u: tally.client(u, clients[u].share_keys, roster) for u in ids}
    inbox = tally.server(server.route_shares, [e for out in shares.values() for e in out])
    shared = {u: tally.server(server.intersections_for, u) for u in inbox if u not in gone}
    masked = [
        tally.client(u, clients[u].masked_input, rows[u], held[u], dense[u], inbox[u], shared[u])
        for u in shared
    ]
    u3 = tally.server(server.collect_masked, masked)
    dropped = [u for u in inbox if u not in u3]
    answers = [tally.client(u, clients[u].unmask, u3, dropped) for u in u3]
    result = tally.server(server.unmask, answers)
    check(result, held, rows, dense, u3)
    by_id = {a.device_id: a for a in adverts}
    for m in masked:
        tally.bytes[m.device_id]["sent_masked"] = len(m.to_bytes())
    for r in answers:
        tally.bytes[r.device_id]["sent_unmask"] = len(r.to_bytes())
    for u in u3:
        b = tally.bytes[u]
        b["sent_adverts"] = len(by_id[u].to_bytes())
        b["got_roster"] = roster_bytes
        b["sent_shares"] = sum(len(e.to_bytes()) for e in shares[u])
        b["got_inbox"] = sum(len(e.to_bytes()) for e in inbox[u])
        b["got_intersections"] = sum(8 * len(i) + len(v) + 4 for v, i in shared[u].items())
        b["got_lists"] = sum(len(v) + 4 for v in [*u3, *dropped])
    bitmap = [sum((len(held[u]) + 7) // 8 + len(v) + 4 for v in shared[u]) for u in u3]
    plain = [len(held[u]) * (8 + 4 * sizes.dim + 4) + 4 * sizes.dense for u in u3]
    parts = {k: float(np.mean([tally.bytes[u][k] for u in u3])) for k in tally.bytes[u3[0]]}
    return parts | {
        "rows": float(np.mean([len(held[u]) for u in u3])), "plain": float(np.mean(plain)),
        "bitmap": float(np.mean(bitmap)), "dropped": float(len(dropped)),
        "threshold": params.threshold, "server_s": tally.server_s,
        "client_s": float(np.mean([tally.client_s[u] for u in u3])),
        "shared_rows": float(np.mean([len(i) for u in u3 for i in shared[u].values()])),
    }  # fmt: skip


def check(
    result: SecAggResult, held: dict[str, np.ndarray], rows: dict[str, np.ndarray],
    dense: dict[str, np.ndarray], u3: list[str],
) -> None:  # fmt: skip
    """The benchmark's sanity check: the unmasked sum is the plain sum (not timed)."""
    want = np.zeros_like(result.row_sums)
    want_dense = np.zeros_like(result.dense)
    for u in u3:
        pos = np.searchsorted(result.row_ids, held[u])
        want[pos] += rows[u]
        want_dense += dense[u]
    if not (np.array_equal(want, result.row_sums) and np.array_equal(want_dense, result.dense)):
        raise AssertionError("the unmasked sum differs from the plain sum")


def kb(x: float) -> str:
    return f"{x / 1000:.1f}"


def report(runs: dict[tuple[int, float], list[dict[str, float]]], sizes: Sizes) -> None:
    head = ["cohort", "t", "dropped", "rows/device", "plain push KB", "secagg sent KB",
            "secagg received KB", "ratio (sent+received)/plain", "server s/round",
            "client s/device (survivor)"]  # fmt: skip
    lines = []
    for (n, drop), rs in sorted(runs.items()):
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        sent = sum(v for k, v in m.items() if k.startswith("sent_"))
        got = sum(v for k, v in m.items() if k.startswith("got_"))
        srv = [r["server_s"] for r in rs]
        cli = [r["client_s"] for r in rs]
        lines.append([
            n, int(m["threshold"]), f"{m['dropped']:.0f} ({drop:.0%})", f"{m['rows']:.0f}",
            kb(m["plain"]), kb(sent), kb(got), f"{(sent + got) / m['plain']:.3f}",
            f"{np.mean(srv):.3f} ± {np.std(srv):.3f}", f"{np.mean(cli):.3f} ± {np.std(cli):.3f}",
        ])  # fmt: skip
    print(f"row = {sizes.dim} floats (+{BIAS_AND_FLAGS} uint32 under secagg), "
          f"dense = {sizes.dense} parameters, catalogue {sizes.catalogue}\n")  # fmt: skip
    print("\n".join(markdown_table(head, lines)))
    parts = ["sent_adverts", "got_roster", "sent_shares", "got_inbox", "sent_masked",
             "got_intersections", "bitmap", "sent_unmask", "got_lists"]  # fmt: skip
    print("\nPer device, bytes by message (0 % dropouts, mean over seeds):\n")
    rows = []
    for (n, drop), rs in sorted(runs.items()):
        if drop == 0:
            rows.append([n, *(f"{np.mean([r[p] for r in rs]):,.0f}" for p in parts),
                         f"{np.mean([r['shared_rows'] for r in rs]):.1f}"])  # fmt: skip
    print("\n".join(markdown_table(["cohort", *parts, "mean |I_uv|"], rows)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohorts", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1])
    args = ap.parse_args()
    t0 = time.perf_counter()
    sizes = experiment_sizes(args.seed[0])
    print(
        f"world built in {time.perf_counter() - t0:.0f} s: {len(sizes.pulls)} devices", flush=True
    )
    runs: dict[tuple[int, float], list[dict[str, float]]] = defaultdict(list)
    for n in args.cohorts:
        for drop in args.dropouts:
            for seed in args.seed:
                runs[(n, drop)].append(run_round(sizes, n, drop, seed))
            print(f"cohort {n}, dropout {drop:.0%}: done", flush=True)
    report(runs, sizes)


if __name__ == "__main__":
    main()
