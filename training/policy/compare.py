"""Policy comparison at equal realised request rates on held-out world sessions.

python -m training.policy.compare --out docs/figures
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from device_agent.policy.pacing import DualPacer
from device_agent.policy.value import RequestValueModel
from training.policy.device import (
    BENCH_WORLD,
    DeviceSession,
    bench_world,
    session_plan,
    split_users,
)
from training.policy.policies import BASELINES, Score, value_score

BUDGETS = (0.05, 0.10, 0.20, 0.30, 0.50)
MODEL = Path("artifacts/policy/request_value.onnx")


@dataclass(frozen=True)
class RunResult:
    clicks: float  # per session
    purchases: float
    reward: float
    expected_reward: float
    rate: float  # requests / decision steps (a session's first step is not a request)


def run(
    plan: list[tuple[int, int, int]],
    score: Score | None,
    theta: float,
    pacer_budget: float | None = None,
    pacer_eta: float = 0.0,
) -> RunResult:
    """Run every session of the plan; score None = NoQ, theta −inf = AlwaysQ."""
    world, cloud = bench_world(0)
    clicks = buys = expected = 0.0
    requests = decisions = 0
    pacer = None
    if pacer_budget:  # λ ≥ 0: a paced device never asks when the value is not positive
        pacer = DualPacer(pacer_budget, eta=pacer_eta, lam=max(theta, 0.0), burst=2.0)
    for user, seed, n_steps in plan:
        dev = DeviceSession.start(world, cloud, user, seed)
        rng = np.random.default_rng([seed, 3])  # tie-breaks: same draws for every policy
        for t in range(n_steps):
            u = float(rng.random())
            ask = False
            if t > 0 and score is not None:
                s = score(dev.view, u)
                ask = pacer.decide(s) if pacer else s > theta
                if pacer:
                    pacer.update(ask)
                requests += ask
                decisions += 1
            elif t > 0:
                decisions += 1
            out = dev.step(ask)
            clicks += out.clicks.sum()
            buys += out.purchases.sum()
            expected += out.expected_reward
    n = len(plan)
    reward = (clicks + 3.0 * buys) / n
    return RunResult(clicks / n, buys / n, reward, expected / n, requests / max(decisions, 1))


def _scorer(name: str) -> tuple[Score, tuple[float, float]]:
    if name in BASELINES:
        return BASELINES[name]
    model = RequestValueModel(MODEL.read_bytes())
    return value_score(model), (-20.0, 40.0)


def tune(name: str, budget: float, plan: list, iters: int = 14) -> float:
    """Bisection on θ so the policy's realised rate on the tuning plan matches the budget."""
    score, (lo, hi) = _scorer(name)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        rate = run(plan, score, mid).rate
        if abs(rate - budget) <= 0.02 * budget:
            return mid
        lo, hi = (mid, hi) if rate > budget else (lo, mid)
    return 0.5 * (lo + hi)


def evaluate(job: tuple) -> tuple[str, float, float, RunResult]:
    name, budget, tune_plan, test_plan = job
    theta = tune(name.removesuffix(" paced"), budget, tune_plan)
    score, _ = _scorer(name.removesuffix(" paced"))
    if name.endswith("paced"):
        result = run(test_plan, score, theta, pacer_budget=budget, pacer_eta=0.5)
    else:
        result = run(test_plan, score, theta)
    return name, budget, theta, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--tune-sessions", type=int, default=100)
    ap.add_argument("--test-sessions", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.time()
    train_users, test_users = split_users(BENCH_WORLD["n_users"])
    tune_plan = session_plan(0, train_users, args.tune_sessions, 21)
    test_plan = session_plan(0, test_users, args.test_sessions, 22)
    names = [*BASELINES, "Ours", "Ours paced"]
    jobs = [(n, b, tune_plan, test_plan) for b in BUDGETS for n in names]
    with Pool(args.workers) as pool:
        results = pool.map(evaluate, jobs, chunksize=1)
    noq, alwaysq = run(test_plan, None, 0.0), run(test_plan, BASELINES["RandQ"][0], -1.0)
    write_outputs(Path(args.out), results, noq, alwaysq, len(test_plan), time.time() - t0)


def write_outputs(out: Path, results: list, noq: RunResult, alwaysq: RunResult, n: int,
                  seconds: float) -> None:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)

    def gain(r: RunResult) -> float:
        return (r.expected_reward - noq.expected_reward) / (
            alwaysq.expected_reward - noq.expected_reward
        )

    lines = [
        f"Held-out sessions: {n}; world {BENCH_WORLD}, seed 0, held-out users; {seconds:.0f}s.",
        "",
        "| budget | policy | realised rate | clicks/session | purchases/session | "
        "reward/session | E[reward]/session | gain (% of AlwaysQ's, E[reward]) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    row = "| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.1f} |"
    for label, r in (("—", noq), ("—", alwaysq)):
        name = "NoQ" if r is noq else "AlwaysQ"
        lines.append(row.format(label, name, r.rate, r.clicks, r.purchases, r.reward,
                                r.expected_reward, 100 * gain(r)))  # fmt: skip
    for name, budget, _theta, r in sorted(results, key=lambda x: (x[1], x[0])):
        lines.append(row.format(f"{budget:.0%}", name, r.rate, r.clicks, r.purchases, r.reward,
                                r.expected_reward, 100 * gain(r)))  # fmt: skip
    (out / "policy_table.md").write_text("\n".join(lines) + "\n")
    dump = [{"policy": p, "budget": b, "theta": t, **r.__dict__} for p, b, t, r in results]
    extra = {"NoQ": noq.__dict__, "AlwaysQ": alwaysq.__dict__}
    (out / "policy_results.json").write_text(json.dumps({"runs": dump, **extra}, indent=1))
    plot(out / "policy_reward_vs_rate.png", results, noq, alwaysq)
    print("\n".join(lines))


def plot(path: Path, results: list, noq: RunResult, alwaysq: RunResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(p for p, *_ in results):
        pts = sorted((r.rate, r.expected_reward) for p, _, _, r in results if p == name)
        ax.plot(*zip(*pts, strict=True), marker="o", label=name)
    ax.axhline(noq.expected_reward, color="grey", ls=":", label="NoQ")
    ax.axhline(alwaysq.expected_reward, color="black", ls="--", label="AlwaysQ (rate 1)")
    ax.set_xlabel("realised request rate (requests / decision step)")
    ax.set_ylabel("expected reward per session (clicks + 3 × purchases)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
