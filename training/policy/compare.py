"""Policy comparison at equal realised request rates on held-out sessions of the judged worlds.

python -m training.policy.compare --worlds default,seed1,seed2,drift0.01,drift0.08 \
    --models artifacts/policy --out docs/figures
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from device_agent.policy.pacing import LAM_MIN
from device_agent.policy.value import RequestValueModel
from training.policy.device import (
    Rule,
    RunResult,
    agent_pool_size,
    judged_world,
    run_plan,
    session_plan,
    split_users,
)
from training.policy.oracle import LABEL as ORACLE
from training.policy.oracle import OracleRule, UpliftCache
from training.policy.policies import (
    BASELINES,
    AgentPacing,
    PacedRule,
    ThresholdRule,
    rand_q,
    value_score,
)
from training.policy.worlds import WORLDS

BUDGETS = (0.05, 0.10, 0.20, 0.30)
TOLERANCE = 0.05  # realised rate within ±5 % of the budget
MODEL = Path("artifacts/policy/request_value.onnx")  # the first model (and the latency bench's)
OURS = "Ours (log-trained, paced, as the agent runs it)"
OURS_STATIC = "Ours, static threshold (no pacer, exploration or allowance)"
REFERENCE = "Oracle-label value (upper reference, paced)"
ORACLE_DEVICE = f"{ORACLE}, per-device allowance"
PACED_FILES = {OURS: "request_value.onnx", REFERENCE: "oracle_label_value.onnx"}
MODEL_FILES = {**PACED_FILES, OURS_STATIC: "request_value.onnx"}
PACED_RANGE = (LAM_MIN, 30.0)  # λ₀ of a paced rule (value units)
VALUE_RANGE = (-5.0, 30.0)  # θ of the static threshold on the value
ORACLE_RANGE = (-5.0, 20.0)


@dataclass(frozen=True)
class Setup:
    """One world's plans (tuning sessions of training users, test sessions of held-out users)
    and the items per cloud list at each budget."""

    world: str
    tune: list[tuple[int, int, int]] = field(repr=False)
    test: list[tuple[int, int, int]] = field(repr=False)
    pools: dict[float, int]  # budget → items per list

    @staticmethod
    def of(world: str, n_tune: int, n_test: int, budgets: tuple[float, ...] = BUDGETS,
           agent_pool: bool = False) -> Setup:  # fmt: skip
        """`agent_pool`: lists as long as the agent asks at each budget, else the world's."""
        n_users = WORLDS[world].n_users
        train_users, test_users = split_users(n_users)
        tune = session_plan(n_users, train_users, n_tune, 21)
        test = session_plan(n_users, test_users, n_test, 22)
        pools = {b: agent_pool_size(world, b) if agent_pool else WORLDS[world].pool_size
                 for b in budgets}  # fmt: skip
        return Setup(world, tune, test, pools)

    def tuned(self, rule: Rule, pool: int) -> RunResult:
        return run_plan(*judged_world(self.world, pool), self.tune, rule)

    def tested(self, rule: Rule, pool: int) -> RunResult:
        return run_plan(*judged_world(self.world, pool), self.test, rule)


@dataclass(frozen=True)
class Row:
    world: str
    policy: str
    budget: float | None  # None: NoQ and AlwaysQ, run once per world and list length
    theta: float  # the tuned threshold (λ₀ for a paced rule, the price for the oracle)
    result: RunResult
    evals: int  # test-plan runs the rate matching took
    pool: int  # items per cloud list


def match_rate(
    rate_at: Callable[[float], RunResult],
    target: float,
    bracket: tuple[float, float],
    start: float | None = None,
    tol: float = 0.8 * TOLERANCE,
    max_evals: int = 8,
) -> tuple[float, RunResult, int]:
    """θ whose run has a realised rate within ±tol·target of the target.

    The rate falls as θ rises; the bracket's ends are taken to give rate 1 and 0 (not run).
    Dekker's safeguarded secant (Brent, "Algorithms for Minimization without Derivatives",
    1973, ch. 4): a secant step through the last two runs, a bisection of the bracket when the
    step leaves it or the same end moved twice (a flat stretch, e.g. only forced refills left).
    From `start`, the second run is a small step towards the target. Only the rate is matched,
    never the reward. Returns the closest θ, its run and the number of runs.
    """
    (a, fa), (b, fb) = (bracket[0], 1.0 - target), (bracket[1], -target)
    theta = start if start is not None else a + fa * (b - a) / (fa - fb)
    best: tuple[float, RunResult] | None = None
    runs: list[tuple[float, float]] = []
    moved = ""
    while len(runs) < max_evals:
        result = rate_at(theta)
        f = result.rate - target
        runs.append((theta, f))
        if best is None or abs(f) < abs(best[1].rate - target):
            best = (theta, result)
        if abs(f) <= tol * target:
            break
        side = "a" if f > 0 else "b"  # f > 0: too many requests, the root is above θ
        a, fa, b, fb = (theta, f, b, fb) if side == "a" else (a, fa, theta, f)
        if len(runs) == 1 and start is not None:
            step = 0.02 * (bracket[1] - bracket[0])
            theta = theta + step if side == "a" else theta - step
        elif len(runs) >= 2 and runs[-1][1] != runs[-2][1] and side != moved:
            (t1, f1), (t2, f2) = runs[-2:]
            theta = t2 - f2 * (t2 - t1) / (f2 - f1)
        else:
            theta = 0.5 * (a + b)
        if not a < theta < b:
            theta = 0.5 * (a + b)
        moved = "" if side == moved else side
    assert best is not None
    return best[0], best[1], len(runs)


_MODELS: dict[Path, RequestValueModel] = {}


def _model(path: Path) -> RequestValueModel:
    if path not in _MODELS:
        _MODELS[path] = RequestValueModel(path.read_bytes())
    return _MODELS[path]


def rule_maker(policy: str, budget: float, model: Path | None) -> Callable[[float], Rule]:
    if policy in BASELINES:
        score = BASELINES[policy][0]
        return lambda theta: ThresholdRule(score, theta)
    assert model is not None
    value_model, pacing = _model(model), AgentPacing.defaults()
    if policy == OURS_STATIC:  # the model alone, decided like the baselines
        score = value_score(value_model)
        return lambda theta: ThresholdRule(score, theta)
    return lambda lam0: PacedRule(value_model, budget, lam0, pacing)


def evaluate(job: tuple[Setup, str, float, Path | None]) -> list[Row]:
    """Tune θ on the training users' sessions, then match the rate on the held-out plan."""
    setup, policy, budget, model = job
    if model is not None and not model.exists():  # removed since the job list was made
        print(f"note: {model} gone, {policy!r} skipped on {setup.world}", flush=True)
        return []
    make, pool = rule_maker(policy, budget, model), setup.pools[budget]
    ranges = {OURS_STATIC: VALUE_RANGE, OURS: PACED_RANGE, REFERENCE: PACED_RANGE}  # θ ranges
    bracket = BASELINES[policy][1] if policy in BASELINES else ranges[policy]
    theta, _, _ = match_rate(lambda th: setup.tuned(make(th), pool), budget, bracket, max_evals=12)
    theta, result, n = match_rate(lambda th: setup.tested(make(th), pool), budget, bracket, theta)
    return [Row(setup.world, policy, budget, theta, result, n, pool)]


def floor_and_ceiling(setup: Setup) -> list[Row]:
    """NoQ (only the forced refills: the agent's "never") and AlwaysQ (every step), per list
    length in use."""
    rows = []
    for pool in sorted(set(setup.pools.values())):
        for name, rule in (
            ("NoQ", ThresholdRule(None, 0.0)),
            ("AlwaysQ", ThresholdRule(rand_q, -1.0)),
        ):
            rows.append(Row(setup.world, name, None, 0.0, setup.tested(rule, pool), 1, pool))
    return rows


def oracle(setup: Setup) -> list[Row]:
    """Both oracle variants at every budget on the held-out plan, one uplift cache per list
    length. The price is searched on the held-out plan directly (no tuning plan): it is a
    judge, and its rollouts are the expensive part of the comparison."""
    caches: dict[int, UpliftCache] = {}
    rows = []
    for label, per_device in ((ORACLE, False), (ORACLE_DEVICE, True)):
        lam = 0.0
        for budget in sorted(setup.pools, reverse=True):
            pool = setup.pools[budget]
            cache = caches.setdefault(pool, UpliftCache())
            allowance = budget if per_device else None

            def run(price: float, c: UpliftCache = cache, b: float | None = allowance,
                    p: int = pool) -> RunResult:  # fmt: skip
                return setup.tested(OracleRule(c, price, b), p)

            lam, result, n = match_rate(run, budget, ORACLE_RANGE, start=lam)
            rows.append(Row(setup.world, label, budget, lam, result, n, pool))
    return rows


def jobs(setups: list[Setup], models: Path) -> Iterator[tuple[Callable, tuple]]:
    """The oracle first (the longest jobs), then the rest; missing model files are skipped."""
    for s in setups:
        yield oracle, (s,)
    for s in setups:
        yield floor_and_ceiling, (s,)
        for policy, file in MODEL_FILES.items():
            path = models / s.world / file
            if not path.exists():
                print(f"note: {path} missing, {policy!r} skipped on {s.world}", flush=True)
                continue
            for budget in s.pools:
                yield evaluate, ((s, policy, budget, path),)
        for policy in BASELINES:
            for budget in s.pools:
                yield evaluate, ((s, policy, budget, None),)


def _call(job: tuple[Callable, tuple]) -> tuple[list[Row], float]:
    fn, args = job
    t0 = time.time()
    return fn(*args), time.time() - t0


ORDER = ("NoQ", "AlwaysQ", *BASELINES, OURS_STATIC, OURS, REFERENCE, ORACLE_DEVICE, ORACLE)


def references(rows: list[Row]) -> dict[tuple[str, str, int], float]:
    """E[reward] of NoQ and AlwaysQ by (world, policy, items per list)."""
    return {(r.world, r.policy, r.pool): r.result.expected_reward for r in rows if not r.budget}


def gains(rows: list[Row]) -> dict[Row, tuple[float, float]]:
    """Each run's share of the oracle's gain and of AlwaysQ's over NoQ in E[reward], with the
    same list length; the oracle = the better of its two variants at that budget."""
    at = {(r.world, r.policy, r.budget): r.result.expected_reward for r in rows}
    ref = references(rows)
    out = {}
    for r in rows:
        noq, always = ref[r.world, "NoQ", r.pool], ref[r.world, "AlwaysQ", r.pool]
        top = max(at.get((r.world, o, r.budget), math.nan) for o in (ORACLE, ORACLE_DEVICE))
        e = r.result.expected_reward
        out[r] = ((e - noq) / (top - noq), (e - noq) / (always - noq))
    return out


def oracle_check(rows: list[Row]) -> list[str]:
    """Every run whose E[reward] beats an oracle's at its budget: any policy against the fleet
    oracle, the paced rules (same allowance) against the per-device oracle, and the
    per-device oracle against the fleet one (the greedy oracle is not the optimum)."""
    at = {(r.world, r.policy, r.budget): r.result for r in rows}
    found = []
    for r in rows:
        if r.budget is None or r.policy == ORACLE:
            continue
        refs = [ORACLE] + ([ORACLE_DEVICE] if r.policy in PACED_FILES else [])
        for ref in refs:
            o = at.get((r.world, ref, r.budget))
            if o is not None and r.result.expected_reward > o.expected_reward:
                found.append(
                    f"{r.world} {r.budget:.0%}: {r.policy} {r.result.expected_reward:.3f} "
                    f"(rate {r.result.rate:.3f}) > {ref} {o.expected_reward:.3f} "
                    f"(rate {o.rate:.3f})"
                )
    return found


def _order(row: Row) -> tuple[float, int, int]:
    return (row.budget or 0.0, row.pool, ORDER.index(row.policy))


def world_table(rows: list[Row], g: dict) -> list[str]:
    lines = ["| budget | items/list | policy | θ | realised rate | refills | E[reward]/session | "
             "reward/session | % of oracle gain | % of AlwaysQ gain | test runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=_order):
        share_o, share_a = g[r]
        b = "—" if r.budget is None else f"{r.budget:.0%}"
        miss = r.budget is not None and abs(r.result.rate - r.budget) > TOLERANCE * r.budget
        rate = f"{r.result.rate:.3f}" + (" (off)" if miss else "")
        lines.append(f"| {b} | {r.pool} | {r.policy} | {r.theta:.3g} | {rate} | "
                     f"{r.result.refills:.3f} | "
                     f"{r.result.expected_reward:.3f} | {r.result.reward:.3f} | "
                     f"{100 * share_o:.1f} | {100 * share_a:.1f} | {r.evals} |")  # fmt: skip
    return lines


def summary(rows: list[Row], g: dict) -> tuple[list[str], list[dict]]:
    """Mean and spread over worlds (the seed worlds are the seeds) per policy and budget."""
    lines = ["| budget | policy | worlds | realised rate min–max | % of oracle gain mean ± sd | "
             "% of AlwaysQ gain mean ± sd | E[reward] − NoQ mean |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    ref = references(rows)
    out = []
    keys = sorted({(r.budget, r.policy) for r in rows if r.budget is not None},
                  key=lambda k: (k[0], ORDER.index(k[1])))  # fmt: skip
    for budget, policy in keys:
        rs = [r for r in rows if r.budget == budget and r.policy == policy]
        so = np.array([g[r][0] for r in rs]) * 100
        sa = np.array([g[r][1] for r in rs]) * 100
        rate = [r.result.rate for r in rs]
        lift = np.mean([r.result.expected_reward - ref[r.world, "NoQ", r.pool] for r in rs])
        sd_o, sd_a = (so.std(ddof=1), sa.std(ddof=1)) if len(rs) > 1 else (0.0, 0.0)
        lines.append(f"| {budget:.0%} | {policy} | {len(rs)} | {min(rate):.3f}–{max(rate):.3f} |"
                     f" {so.mean():.1f} ± {sd_o:.1f} | {sa.mean():.1f} ± {sd_a:.1f} | "
                     f"{lift:.3f} |")  # fmt: skip
        out.append(dict(budget=budget, policy=policy, worlds=len(rs), oracle_share=so.mean(),
                        oracle_share_sd=sd_o, always_share=sa.mean(), always_share_sd=sd_a,
                        rate_min=min(rate), rate_max=max(rate)))  # fmt: skip
    return lines, out


def write_report(out: Path, rows: list[Row], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    g = gains(rows)
    table, means = summary(rows, g)
    beaten = oracle_check(rows)
    missed = [
        f"{r.world} {r.budget:.0%} {r.policy}: {r.result.rate:.4f}"
        for r in rows
        if r.budget is not None and abs(r.result.rate - r.budget) > TOLERANCE * r.budget
    ]
    lines = [
        f"Worlds: {', '.join(dict.fromkeys(r.world for r in rows))}; "
        f"{meta['test_sessions']} held-out sessions each (tuning: {meta['tune_sessions']} "
        f"sessions of training users); {meta['seconds']} s on {meta['workers']} workers.",
        "Items per cloud list at each budget: "
        + "; ".join(f"{w}: {pools}" for w, pools in meta["items_per_list"].items())
        + ".",
        "",
        "Mean over worlds:",
        "",
        *table,
        "",
        "Oracle check (a policy above the oracle at its budget): "
        + ("none" if not beaten else f"{len(beaten)} case(s)"),
        "",
        *[f"- {b}" for b in beaten],
        "",
        "Rates off the budget by more than ±5 %: " + (", ".join(missed) or "none"),
        "",
    ]
    for world in dict.fromkeys(r.world for r in rows):
        lines += [f"### {world}", "", *world_table([r for r in rows if r.world == world], g), ""]
    (out / "policy_table.md").write_text("\n".join(lines))
    runs = [dict(world=r.world, policy=r.policy, budget=r.budget, theta=r.theta, evals=r.evals,
                 pool=r.pool, oracle_share=g[r][0], always_share=g[r][1], **r.result.__dict__)
            for r in rows]  # fmt: skip
    doc = dict(meta=meta, summary=means, runs=runs, oracle_check=beaten, rate_misses=missed)
    (out / "policy_results.json").write_text(json.dumps(doc, indent=1, default=float))
    plot(out / "policy_reward_vs_rate.png", rows, g)
    print("\n".join(lines))


def plot(path: Path, rows: list[Row], g: dict) -> None:
    """One panel per world (E[reward] vs realised rate) and the mean share of the oracle's gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = list(dict.fromkeys(r.world for r in rows))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    policies = [p for p in ORDER if any(r.policy == p and r.budget for r in rows)]
    for ax, world in zip(axes.flat, worlds, strict=False):
        for p in policies:
            pts = sorted((r.result.rate, r.result.expected_reward) for r in rows
                         if r.world == world and r.policy == p)  # fmt: skip
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=p)
        for r in rows:
            if r.world == world and r.budget is None:
                ax.axhline(r.result.expected_reward, color="grey", ls=":" if r.policy == "NoQ"
                           else "--", lw=1)  # fmt: skip
        ax.set_xlim(0, 0.35)
        ax.set_title(world)
        ax.set_xlabel("realised request rate")
        ax.set_ylabel("E[reward] per session")
    ax = axes.flat[-1]
    for p in policies:
        budgets = sorted({r.budget for r in rows if r.policy == p and r.budget})
        pts = [(b, 100 * np.mean([g[r][0] for r in rows if r.policy == p and r.budget == b]))
               for b in budgets]  # fmt: skip
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=p)
    ax.set_title("mean over worlds")
    ax.set_xlabel("budget")
    ax.set_ylabel("% of the oracle's gain over NoQ")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worlds", default=",".join(WORLDS))
    ap.add_argument("--models", type=Path, default=Path("artifacts/policy"))
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    ap.add_argument("--tune-sessions", type=int, default=150)
    ap.add_argument("--test-sessions", type=int, default=400)
    ap.add_argument("--budgets", default=",".join(str(b) for b in BUDGETS))
    ap.add_argument(
        "--agent-pool",
        action="store_true",
        help="lists as long as the agent asks at each budget (default: the world's)",
    )
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.time()
    budgets = tuple(float(b) for b in args.budgets.split(","))
    setups = [Setup.of(w, args.tune_sessions, args.test_sessions, budgets, args.agent_pool)
              for w in args.worlds.split(",")]  # fmt: skip
    rows: list[Row] = []
    with Pool(args.workers) as pool:
        for part, took in pool.imap_unordered(_call, list(jobs(setups, args.models)), 1):
            rows.extend(part)
            for r in part[:1]:
                print(f"[{time.time() - t0:5.0f}s] {r.world} {r.policy} {r.budget}: {took:.0f}s")
    models = {s.world: {p: str((args.models / s.world / f).resolve()) for p, f in
                        MODEL_FILES.items() if (args.models / s.world / f).exists()}
              for s in setups}  # fmt: skip
    meta = dict(
        tune_sessions=args.tune_sessions, test_sessions=args.test_sessions, budgets=budgets,
        items_per_list={s.world: s.pools for s in setups}, tolerance=TOLERANCE,
        seconds=round(time.time() - t0), models=models,
        pacing=repr(AgentPacing.defaults()), workers=args.workers,
    )  # fmt: skip
    write_report(args.out, rows, meta)


if __name__ == "__main__":
    main()
