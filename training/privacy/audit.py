"""The ε audit of index privacy: an attacker who sees every pull guesses each device's true set.

`python -m training.privacy.audit --rounds 1 3 10 30 --seeds 0 1 2`

The world's sessions drive each device's `LocalExamples` the way the agent does (every cloud list
noted with its arrival time, then exposures, clicks, purchases); a share `outage` of sessions
find the cloud down and are served the agent's fallback, another device's latest list, which the
device never noted as sent. A device takes part in a round once it holds `min_examples`
impressions. Two schedules of R rounds: `static` — after all of the device's data (its true set
fixed between pulls, as the issue measured), `dynamic` — spread over the world's days, so items
change status between pulls (sent, then shown; or shown, then out of the window).

The attacker is the cloud: it knows what it sent each device and the public pool, and sees every
pulled set (a push names the same rows; their values are masked by secure aggregation). Per
candidate item (known pool ∪ pulled ∪ true) it has three statistics: the share of the rounds it
could be pulled in that pulled it; the same, topped when the item went from "not pulled" to
"pulled" (the status change a memo following the status gives away); and the last pull. An item
pulled outside the known pool is revealed outright (topped in all three). The target is the
device's true set at its last round.

Empirical privacy loss as in DP auditing (Jagielski et al., "Auditing differentially private
machine learning", NeurIPS 2020; Nasr et al., "Adversary instantiation", IEEE S&P 2021): for a
membership test with rates TPR, FPR, ε̂ = max(ln(TPR/FPR), ln((1−FPR)/(1−TPR))), and ε_lo
the same with Clopper–Pearson bounds (TPR from below, FPR from above, 95 % each). The test (a
statistic and its threshold) is chosen on the even devices and measured on the odd ones, so the
choice does not inflate the bound. A claim holds when ε_lo ≤ the claimed ε.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.stats import beta

from device_agent.trainer.examples import LocalExamples
from device_agent.trainer.index_privacy import IndexPrivacy
from protos.actions import Action
from simulator.cloud import ReferenceCloud
from simulator.logs import STEP_SECONDS, session_schedule
from simulator.pipeline import HISTORY_LEN
from simulator.scales import SCALES
from simulator.session import feed_step, start_session
from simulator.tables import markdown_table
from simulator.world import World
from tandem_core.federated.privacy import epsilon, item_uniforms, membership_epsilon, pad_ids

STATS = ("share of pulls", "change then share", "last pull")


@dataclass(frozen=True)
class AuditConfig:
    keep_prob: float = 0.9
    decoy_prob: float = 0.1
    public_pool: int = 500  # the fleet's most clicked items, shared by every device's pool
    outage: float = 0.05  # share of sessions served the agent's fallback list
    rekey_days: float = 2.0  # the re-keyed variant's key lifetime (the agent never re-keys)
    min_examples: int = 20
    capacity: int = 2000
    refresh_prob: float = 0.3
    alpha: float = 0.05  # each Clopper–Pearson bound at 1 − α/2


@dataclass(frozen=True)
class Step:
    t: float
    sent: np.ndarray | None  # the cloud list that arrived at this step, if one did
    page: np.ndarray
    clicks: np.ndarray
    purchases: np.ndarray


class FleetCloud(ReferenceCloud):
    """The world's cloud as the agent sees it: what it sent, and when down the agent's fallback
    (the latest list any device got), which the device does not note as sent."""

    down = False
    sent: np.ndarray | None = None
    latest = np.empty(0, dtype=np.int64)

    def recommend(self, user: int, feedback: Any, k: int, exclude: set[int]) -> np.ndarray:
        if self.down:
            return self.latest[~np.isin(self.latest, list(exclude))]
        items = super().recommend(user, feedback, k, exclude)
        self.sent = self.latest = items
        return items


def fleet_steps(world: World, seed: int, cfg: AuditConfig) -> dict[int, list[Step]]:
    """Every device's feed steps in time order (the world's sessions, randomised refreshes)."""
    rng = np.random.default_rng([seed, 1])
    cloud = FleetCloud(world)
    out: dict[int, list[Step]] = defaultdict(list)
    for start, user, n_steps in session_schedule(world, rng):
        state = start_session(world, user, seed=int(rng.integers(2**63)))
        cloud.down = bool(rng.random() < cfg.outage)
        for _ in range(n_steps):
            cloud.sent = None
            o = feed_step(world, cloud, state, refresh=bool(rng.random() < cfg.refresh_prob))
            t = float(start + o.step * STEP_SECONDS)
            out[user].append(Step(t, cloud.sent, o.page, o.clicks, o.purchases))
    return out


def apply(ex: LocalExamples, step: Step, category: np.ndarray) -> None:
    """What the agent records for a step: the list it got, then the app's events."""
    if step.sent is not None and len(step.sent):
        ex.note_list(step.sent, category[step.sent])
    events = zip(step.page.tolist(), step.clicks.tolist(), step.purchases.tolist(), strict=True)
    for pos, (item, click, buy) in enumerate(events):
        ex.record(item, Action.EXPOSURE, pos)
        if click:
            ex.record(item, Action.CLICK, pos)
        if buy:
            ex.record(item, Action.PURCHASE, pos)


def most_clicked(steps: dict[int, list[Step]], n: int) -> np.ndarray:
    """The public pool: the n most clicked items of the fleet's logs (the bundle's popularity)."""
    clicks: defaultdict[int, int] = defaultdict(int)
    for device in steps.values():
        for s in device:
            for item in s.page[s.clicks].tolist():
                clicks[item] += 1
    order = sorted(clicks, key=lambda i: (-clicks[i], i))
    return np.array(sorted(order[:n]), dtype=np.int64)


@dataclass(frozen=True)
class Snapshot:
    """One device at one round: what it trains on and what the cloud sent it."""

    now: float
    true: np.ndarray
    items: np.ndarray  # the item of every impression (what training keeps or drops)
    sent: np.ndarray

    @classmethod
    def of(cls, ex: LocalExamples, now: float) -> Snapshot:
        a = ex.arrays()
        true = np.unique(np.concatenate([a["item"], a["history"][a["history"] >= 0]]))
        return cls(now, true, a["item"], ex.decoy_pool())


class Mechanism(Protocol):
    name: str

    def pull(self, device: str, snap: Snapshot) -> np.ndarray: ...

    def pool(self, snap: Snapshot) -> np.ndarray:
        """The decoy pool, which the attacker knows (it sent the items; the rest is public)."""
        ...

    def claimed(self) -> tuple[float, str]: ...


@dataclass
class Fresh:
    """Today: fresh randomized response every pull over the items the cloud sent."""

    p: float
    q: float
    rng: np.random.Generator
    name: str = "fresh RR every pull (today)"

    def pull(self, device: str, snap: Snapshot) -> np.ndarray:
        return pad_ids(snap.true, snap.sent, self.p, self.q, self.rng)

    def pool(self, snap: Snapshot) -> np.ndarray:
        return snap.sent

    def claimed(self) -> tuple[float, str]:
        return epsilon(self.p, self.q), "ε per pull (reported)"


def audit_key(seed: int) -> Any:
    def key(device: str, epoch: int) -> bytes:
        return hashlib.sha256(f"audit:{seed}:{device}:{epoch}".encode()).digest()

    return key


@dataclass
class Following:
    """A memo that follows the status: u < p while true, u < q while not (not what ships)."""

    p: float
    q: float
    public: np.ndarray
    seed: int
    name: str = "memo following the status"
    _u: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))

    def pool(self, snap: Snapshot) -> np.ndarray:
        return np.union1d(snap.sent, self.public)

    def pull(self, device: str, snap: Snapshot) -> np.ndarray:
        pool = self.pool(snap)
        memo = self._u[device]
        new = [i for i in pool.tolist() if i not in memo]
        u_new = item_uniforms(audit_key(self.seed)(device, 1), np.array(new, dtype=np.int64))
        memo.update(zip(new, u_new.tolist(), strict=True))
        u = np.array([memo[i] for i in pool.tolist()])
        return pool[u < np.where(np.isin(pool, snap.true), self.p, self.q)]

    def claimed(self) -> tuple[float, str]:
        return 2 * epsilon(self.p, self.q), "2ε (a status change as a second release)"


@dataclass
class Permanent:
    """What ships: bits fixed at release (device_agent/trainer/index_privacy.py)."""

    p: float
    q: float
    index: IndexPrivacy
    rekey_every_s: float = math.inf  # a new key at each multiple (as a lost key would be)
    name: str = "permanent RR, bits fixed at release"
    _epoch: dict[str, float] = field(default_factory=dict)

    def pull(self, device: str, snap: Snapshot) -> np.ndarray:
        epoch = snap.now // self.rekey_every_s if math.isfinite(self.rekey_every_s) else 0.0
        if self._epoch.setdefault(device, epoch) != epoch:
            self._epoch[device] = epoch
            self.index.rekey(device)
        return self.index.pad(device, snap.true, snap.sent, self.p, self.q).ids

    def pool(self, snap: Snapshot) -> np.ndarray:
        return np.union1d(snap.sent, self.index.public_pool)

    def claimed(self) -> tuple[float, str]:
        worst = max((led.max_epsilon for led in self.index.ledgers().values()), default=0.0)
        return worst, "lifetime ε per item (the accountant's max)"


def mechanisms(cfg: AuditConfig, seed: int, public: np.ndarray) -> list[Mechanism]:
    p, q = cfg.keep_prob, cfg.decoy_prob

    def index() -> IndexPrivacy:
        return IndexPrivacy(public_pool=public, key_source=audit_key(seed))

    rekeyed = Permanent(p, q, index(), rekey_every_s=cfg.rekey_days * 86_400)
    rekeyed.name = f"permanent RR, new key every {cfg.rekey_days:g} days"
    return [
        Fresh(p, q, np.random.default_rng([seed, 7])), Following(p, q, public, seed),
        Permanent(p, q, index()), rekeyed,
    ]  # fmt: skip


def member(a: np.ndarray, sorted_b: np.ndarray) -> np.ndarray:
    """np.isin(a, b) for a sorted, unique b (the sets here are), by binary search."""
    if len(sorted_b) == 0:
        return np.zeros(len(a), dtype=bool)
    idx = np.minimum(np.searchsorted(sorted_b, a), len(sorted_b) - 1)
    return sorted_b[idx] == a


@dataclass
class Tally:
    """One (schedule, R, mechanism): every candidate's statistics, and what training kept."""

    scores: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    labels: list[np.ndarray] = field(default_factory=list)
    half: list[np.ndarray] = field(default_factory=list)
    counts: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add_round(self, snap: Snapshot, pulled: np.ndarray, pool: np.ndarray) -> None:
        c = self.counts
        c["true"] += len(snap.true)
        c["trained"] += member(snap.true, pulled).sum()
        c["impressions"] += len(snap.items)
        c["kept"] += member(snap.items, pulled).sum()
        c["outside_sent"] += (~member(snap.true, snap.sent)).sum()
        c["outside_pool"] += (~member(snap.true, pool)).sum()
        c["outside_impressions"] += (~member(snap.items, pool)).sum()
        c["pulled"] += len(pulled)
        c["rounds"] += 1

    def add_device(self, rounds: list[tuple[np.ndarray, np.ndarray]], true: np.ndarray,
                   odd: bool) -> None:  # fmt: skip
        stats, label = item_statistics(rounds, true)
        for name, s in stats.items():
            self.scores[name].append(s)
        self.labels.append(label)
        self.half.append(np.full(len(label), odd))


def item_statistics(
    rounds: list[tuple[np.ndarray, np.ndarray]], true: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The attacker's statistics of each candidate from (known pool, pulled set) per round."""
    universe = np.unique(np.concatenate([true, *(np.union1d(k, p) for k, p in rounds)]))
    n = len(universe)
    could, pulled_n = np.zeros(n), np.zeros(n)
    changed, revealed = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    unpulled = np.zeros(n, dtype=bool)  # seen in the known pool and not pulled, some round
    for known, pulled in rounds:
        k, idx = np.searchsorted(universe, known), np.searchsorted(universe, pulled)
        could[k] += 1
        outside = ~member(pulled, known)
        could[idx[outside]] += 1
        pulled_n[idx] += 1
        changed[idx[unpulled[idx]]] = True
        revealed[idx[outside]] = True
        now_unpulled = np.ones(len(k), dtype=bool)
        now_unpulled[member(known, pulled)] = False
        unpulled[k[now_unpulled]] = True
    share = pulled_n / np.maximum(could, 1)
    top = 2.0 * revealed
    last = member(universe, rounds[-1][1]).astype(np.float64)
    stats = dict(zip(STATS, (share + top, share + changed + top, last + top), strict=True))
    return stats, member(universe, true)


def cp_bounds(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson: a lower and an upper bound of a rate, each at 1 − α/2."""
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def epsilon_of(tpr: np.ndarray, fpr: np.ndarray) -> np.ndarray:
    """max(ln(TPR/FPR), ln((1−FPR)/(1−TPR))); 0 where a rate pair carries no evidence."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(tpr) - np.log(fpr)
        b = np.log1p(-fpr) - np.log1p(-tpr)
    return np.nan_to_num(np.fmax(a, b), nan=0.0, posinf=math.inf, neginf=0.0)


@dataclass(frozen=True)
class Rates:
    tp: np.ndarray
    pos: int
    fp: np.ndarray
    neg: int


def rates(score: np.ndarray, label: np.ndarray, taus: np.ndarray) -> Rates:
    """True and false positives of "member iff score ≥ τ" for every τ."""
    pos, neg = np.sort(score[label]), np.sort(score[~label])
    tp = len(pos) - np.searchsorted(pos, taus, side="left")
    fp = len(neg) - np.searchsorted(neg, taus, side="left")
    return Rates(tp, len(pos), fp, len(neg))


def bounds(r: Rates, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ε̂, ε_lo, accuracy) of every threshold."""
    tpr, fpr = r.tp / max(r.pos, 1), r.fp / max(r.neg, 1)
    tpr_lo, _ = cp_bounds(r.tp, r.pos, alpha)
    _, fpr_hi = cp_bounds(r.fp, r.neg, alpha)
    acc = (r.tp + r.neg - r.fp) / max(r.pos + r.neg, 1)
    return epsilon_of(tpr, fpr), epsilon_of(tpr_lo, fpr_hi), acc


def attack(
    scores: dict[str, np.ndarray], labels: np.ndarray, odd: np.ndarray, alpha: float
) -> dict[str, Any]:
    """The best test on the even devices, measured on the odd ones: accuracy, ε̂ and ε_lo."""
    best_eps: tuple[float, str, float] = (-math.inf, STATS[0], math.inf)
    best_acc: tuple[float, str, float] = (-math.inf, STATS[0], math.inf)
    for name, score in scores.items():
        taus = np.append(np.unique(score), math.inf)
        _, eps_lo, acc = bounds(rates(score[~odd], labels[~odd], taus), alpha)
        k, j = int(np.argmax(eps_lo)), int(np.argmax(acc))
        best_eps = max(best_eps, (float(eps_lo[k]), name, float(taus[k])), key=lambda b: b[0])
        best_acc = max(best_acc, (float(acc[j]), name, float(taus[j])), key=lambda b: b[0])
    _, name, tau = best_eps
    eps_hat, eps_lo, _ = bounds(rates(scores[name][odd], labels[odd], np.array([tau])), alpha)
    _, acc_name, acc_tau = best_acc
    *_, acc = bounds(rates(scores[acc_name][odd], labels[odd], np.array([acc_tau])), alpha)
    return {
        "accuracy": float(acc[0]), "accuracy_test": f"{acc_name} ≥ {acc_tau:.3g}",
        "eps_hat": float(eps_hat[0]), "eps_lo": float(eps_lo[0]),
        "eps_test": f"{name} ≥ {tau:.3g}", "candidates": len(labels),
        "base_rate": float(1 - labels.mean()),  # the accuracy of guessing "not true" for all
    }  # fmt: skip


def schedules(rounds: Sequence[int], end: float) -> dict[tuple[str, int], np.ndarray]:
    """Round times: `static` after every step, `dynamic` spread evenly up to the end."""
    out = {}
    for r in rounds:
        out[("static", r)] = end + 1.0 + np.arange(r)
        if r > 1:  # one round: the static one
            out[("dynamic", r)] = end * (np.arange(r) + 1.0) / r
    return out


def run_seed(cfg: AuditConfig, scale: str, seed: int, rounds: Sequence[int]) -> list[dict]:
    """Every (schedule, R, mechanism) of one seeded world: attack figures and training kept."""
    world = World(replace(SCALES[scale], seed=seed))
    steps = fleet_steps(world, seed, cfg)
    public = most_clicked(steps, cfg.public_pool)
    end = max(s[-1].t for s in steps.values()) + 3600.0
    plan = schedules(rounds, end)
    mechs = {k: mechanisms(cfg, seed, public) for k in plan}
    tallies = {(k, m.name): Tally() for k in plan for m in mechs[k]}
    times = sorted({float(t) for ts in plan.values() for t in ts})
    for device, timeline in steps.items():
        ex = LocalExamples(HISTORY_LEN, cfg.capacity)
        seen: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        last_true: dict[tuple, np.ndarray] = {}
        i, snap = 0, None
        for t in times:
            moved = False
            while i < len(timeline) and timeline[i].t <= t:
                apply(ex, timeline[i], world.catalog.category)
                i, moved = i + 1, True
            if len(ex) < cfg.min_examples:
                continue
            snap = Snapshot.of(ex, t) if moved or snap is None else replace(snap, now=t)
            for k, ts in plan.items():
                if t not in ts:
                    continue
                for m in mechs[k]:
                    pulled, known = m.pull(str(device), snap), m.pool(snap)
                    tallies[(k, m.name)].add_round(snap, pulled, known)
                    seen[(k, m.name)].append((known, pulled))
                    last_true[(k, m.name)] = snap.true
        for key, obs in seen.items():
            tallies[key].add_device(obs, last_true[key], odd=device % 2 == 1)
    return [summarise(cfg, seed, k, m, tallies[(k, m.name)]) for k in plan for m in mechs[k]]


def summarise(cfg: AuditConfig, seed: int, k: tuple[str, int], m: Mechanism, t: Tally) -> dict:
    scores = {n: np.concatenate(v) for n, v in t.scores.items()}
    result = attack(scores, np.concatenate(t.labels), np.concatenate(t.half), cfg.alpha)
    claimed, claim = m.claimed()
    c = t.counts
    return {
        "seed": seed, "schedule": k[0], "rounds": k[1], "mechanism": m.name, **result,
        "claimed": claimed, "claim": claim, "holds": result["eps_lo"] <= claimed,
        "true_trained": c["trained"] / c["true"],
        "impressions_kept": c["kept"] / c["impressions"],
        "outside_sent": c["outside_sent"] / c["true"],
        "outside_pool": c["outside_pool"] / c["true"],
        "outside_impressions": c["outside_impressions"] / c["impressions"],
        "pulled_per_round": c["pulled"] / c["rounds"], "device_rounds": int(c["rounds"]),
    }  # fmt: skip


def fmt_eps(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.2f}"


def report(rows: list[dict], cfg: AuditConfig) -> list[str]:
    """One line per (schedule, mechanism, R): means over seeds, ε_lo's range, the verdict."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["schedule"], r["mechanism"], r["rounds"])].append(r)
    head = ["schedule", "mechanism", "pulls", "attacker accuracy", "guessing none", "ε̂",
            "ε_lo (min–max)", "claimed ε", "holds", "true ids trained",
            "impressions trained"]  # fmt: skip
    body = []
    for (sched, mech, r), g in groups.items():
        acc = 100 * np.array([x["accuracy"] for x in g])
        lo = [x["eps_lo"] for x in g]
        body.append([
            sched, mech, r, f"{acc.mean():.1f} % ± {acc.std():.1f}",
            f"{100 * np.mean([x['base_rate'] for x in g]):.1f} %",
            fmt_eps(float(np.mean([x["eps_hat"] for x in g]))),
            f"{fmt_eps(min(lo))}–{fmt_eps(max(lo))}", fmt_eps(max(x["claimed"] for x in g)),
            "yes" if all(x["holds"] for x in g) else "no",
            f"{100 * np.mean([x['true_trained'] for x in g]):.1f} %",
            f"{100 * np.mean([x['impressions_kept'] for x in g]):.1f} %",
        ])  # fmt: skip
    p, q = cfg.keep_prob, cfg.decoy_prob
    lines = markdown_table(head, body)
    lines += ["", f"p = {p}, q = {q}: ε per release (reported) = {epsilon(p, q):.3f}, "
              f"tight per-item ε = {membership_epsilon(p, q):.3f}. Candidates: the pool, "
              f"the pulled ids and the true ids; guessing none true scores the share that is "
              f"not. Outage {cfg.outage:.0%} of sessions, public pool {cfg.public_pool} "
              f"items.", ""]  # fmt: skip
    lines += pool_table(rows)
    return lines


def pool_table(rows: list[dict]) -> list[str]:
    """How many true ids fall outside the pool, with and without the public pool."""
    g = [r for r in rows if r["mechanism"].startswith("permanent RR, bits") and
         r["schedule"] == "dynamic"]  # fmt: skip
    if not g:
        return []
    head = ["true ids outside what the cloud sent", "outside sent ∪ public pool",
            "impressions of ids outside the pool", "rows pulled per round (permanent)"]  # fmt: skip
    cells = [f"{100 * np.mean([r[k] for r in g]):.2f} %" for k in
             ("outside_sent", "outside_pool", "outside_impressions")]  # fmt: skip
    cells.append(f"{np.mean([r['pulled_per_round'] for r in g]):.0f}")
    return markdown_table(head, [cells])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--rounds", type=int, nargs="+", default=[1, 3, 10, 30])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--keep-prob", type=float, default=AuditConfig.keep_prob)
    ap.add_argument("--decoy-prob", type=float, default=AuditConfig.decoy_prob)
    ap.add_argument("--public-pool", type=int, default=AuditConfig.public_pool)
    ap.add_argument("--outage", type=float, default=AuditConfig.outage)
    ap.add_argument("--rekey-days", type=float, default=AuditConfig.rekey_days)
    ap.add_argument("--out", type=Path, help="write every seed's figures as JSON here")
    args = ap.parse_args(argv)
    cfg = AuditConfig(args.keep_prob, args.decoy_prob, args.public_pool, args.outage,
                      args.rekey_days)  # fmt: skip
    rows = []
    for seed in args.seeds:
        rows += run_seed(cfg, args.scale, seed, args.rounds)
        print(f"seed {seed} done", flush=True)
    lines = report(rows, cfg)
    print("\n".join(lines))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": asdict(cfg), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
