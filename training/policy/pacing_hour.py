"""Pacing over a simulated hour: the agent's RequestPolicy on the ONNX value, refills and 429s.

python -m training.policy.pacing_hour --model artifacts/policy/default/request_value.onnx

Each device runs back-to-back sessions of one held-out user; all devices step in lockstep, so a
fleet-wide price sees them interleaved as the agent does. Two price scopes: one DualPacer for
the fleet (the agent's) or one per device; every device has its own Allowance either way.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from device_agent.policy.decision import RequestPolicy
from device_agent.policy.features import request_features
from device_agent.policy.pacing import LAM_MIN, Allowance, DualPacer
from device_agent.policy.value import RequestValueModel
from simulator.logs import STEP_SECONDS
from simulator.world import World
from training.policy.device import (
    CachedCloud,
    DeviceSession,
    agent_pool_size,
    judged_world,
    refill_forced,
    split_users,
)
from training.policy.policies import AgentPacing

HOUR_STEPS = 3600 // STEP_SECONDS  # 240 feed steps
BUDGETS = (0.05, 0.10, 0.20, 0.30)
MODEL = Path("artifacts/policy/default/request_value.onnx")
FALLBACK = Path("artifacts/policy/request_value.onnx")


@dataclass(frozen=True)
class HourConfig:
    budget: float
    throttle: float  # share of sent requests the cloud refuses (429)
    scope: str  # "fleet": one price for every device; "device": one price per device
    lam_min: float = LAM_MIN
    price_demand: bool = False
    pool: int | None = None  # items per cloud list; None: the agent's request size


@dataclass
class Phone:
    """One device: its allowance, its draws, its current session and its counters."""

    user: int
    rng: np.random.Generator
    allowance: Allowance
    policy: RequestPolicy
    dev: DeviceSession | None = None
    steps_left: int = 0
    decisions: int = 0
    asks: int = 0
    refills: int = 0
    expected: float = 0.0


def tick(phone: Phone, model: RequestValueModel, world: World, cloud: CachedCloud,
         throttle: float) -> None:  # fmt: skip
    """One feed step of a device: a new session's initial list, or a decision."""
    if phone.steps_left == 0:
        phone.dev = DeviceSession.start(world, cloud, phone.user, int(phone.rng.integers(2**62)))
        phone.steps_left = int(np.clip(phone.rng.geometric(1 / 12), 2, 30)) - 1
        phone.dev.step(False)  # the initial list, not a request
        return
    dev = phone.dev
    assert dev is not None
    forced = refill_forced(world, dev.state)
    value = model.value(request_features(dev.view))
    choice = phone.policy.decide(value, phone.allowance, float(phone.rng.random()), forced)
    refused = choice.ask and bool(phone.rng.random() < throttle)
    phone.policy.record(choice, phone.allowance, throttled=refused)
    phone.expected += dev.step(choice.ask and not refused).expected_reward  # 429: local pool
    phone.steps_left -= 1
    phone.decisions += 1
    phone.asks += int(choice.ask)  # every request sent, granted or refused
    phone.refills += int(forced)


def simulate(job: tuple[HourConfig, str, Path, int]) -> tuple[HourConfig, np.ndarray]:
    """(decisions, asks, refills, expected reward) per device over one hour."""
    cfg, world_name, model_path, n_devices = job
    model = RequestValueModel(model_path.read_bytes())
    pacing = AgentPacing.defaults()
    world, cloud = judged_world(world_name, cfg.pool or agent_pool_size(world_name, cfg.budget))
    _, users = split_users(world.cfg.n_users)

    def policy() -> RequestPolicy:
        pacer = DualPacer(cfg.budget, eta=pacing.eta, backoff=pacing.backoff,
                          lam_min=cfg.lam_min, price_demand=cfg.price_demand)  # fmt: skip
        return RequestPolicy(pacer, pacing.exploration)

    shared = policy()
    phones = [
        Phone(int(users[d]), np.random.default_rng([1000 + d, 5]),
              Allowance(cfg.budget, burst=pacing.burst),
              shared if cfg.scope == "fleet" else policy())
        for d in range(n_devices)
    ]  # fmt: skip
    while any(p.decisions < HOUR_STEPS for p in phones):
        for p in phones:
            if p.decisions < HOUR_STEPS:
                tick(p, model, world, cloud, cfg.throttle)
    stats = np.array([(p.decisions, p.asks, p.refills, p.expected) for p in phones], dtype=float)
    return replace(cfg, pool=world.cfg.pool_size), stats


def row(cfg: HourConfig, stats: np.ndarray) -> str:
    decisions, asks, refills, expected = stats.T
    rates = asks / decisions
    within = np.mean(np.abs(rates - cfg.budget) <= 0.05 * cfg.budget)
    p5, p50, p95 = np.percentile(rates, [5, 50, 95])
    fleet = asks.sum() / decisions.sum()
    return (f"| {cfg.budget:.0%} | {cfg.pool} | {cfg.throttle:.0%} | {cfg.scope} | {fleet:.4f} | "
            f"{100 * (fleet / cfg.budget - 1):+.1f} % | {p5:.3f} / {p50:.3f} / {p95:.3f} | "
            f"{within:.0%} | {refills.sum() / decisions.sum():.3f} | "
            f"{expected.sum() / decisions.sum():.4f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--world", default="default")
    ap.add_argument("--devices", type=int, default=30)
    ap.add_argument("--lam-min", type=float, default=LAM_MIN, help="floor of λ (-inf: none)")
    ap.add_argument("--price-demand", action="store_true", help="price wanted, not sent")
    ap.add_argument("--budgets", default=",".join(str(b) for b in BUDGETS))
    ap.add_argument("--scopes", default="fleet,device")
    ap.add_argument("--pool", type=int, default=None, help="items per list (default: the agent's)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    model = args.model
    if not model.exists():
        print(f"note: {model} missing; using {FALLBACK}")
        model = FALLBACK
    base = HourConfig(0.0, 0.0, "fleet", args.lam_min, args.price_demand, args.pool)
    configs = [
        replace(base, budget=float(b), throttle=t, scope=s)
        for b in args.budgets.split(",") for t in (0.0, 0.2) for s in args.scopes.split(",")
    ]  # fmt: skip
    jobs = [(c, args.world, model, args.devices) for c in configs]
    priced = "demand" if args.price_demand else "requests sent"
    print(f"model {model}; world {args.world}; {args.devices} devices × {HOUR_STEPS} decisions; "
          f"lam_min {args.lam_min}; priced on {priced}; {AgentPacing.defaults()}\n")  # fmt: skip
    print("| budget | pool | 429 share | price scope | fleet rate | vs budget | device rate p5 / "
          "p50 / p95 | devices within ±5 % | refills | E[reward]/step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    with Pool(args.workers) as pool:
        for cfg, stats in pool.imap(simulate, jobs):
            print(row(cfg, stats), flush=True)


if __name__ == "__main__":
    main()
