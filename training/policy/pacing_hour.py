"""Pacing over a simulated hour: per-device DualPacer on the ONNX value, optional 429s.

python -m training.policy.pacing_hour
"""

from __future__ import annotations

import argparse

import numpy as np

from device_agent.policy.features import request_features
from device_agent.policy.pacing import DualPacer
from device_agent.policy.value import RequestValueModel
from simulator.logs import STEP_SECONDS
from training.policy.compare import MODEL
from training.policy.device import DeviceSession, bench_world, split_users

HOUR_STEPS = 3600 // STEP_SECONDS  # 240 feed steps


def device_hour(
    model: RequestValueModel, user: int, seed: int, pacer: DualPacer, throttle: float
) -> tuple[int, int, int]:
    """Back-to-back sessions of one device for an hour; returns (decisions, asks, throttled)."""
    world, cloud = bench_world(0)
    rng = np.random.default_rng([seed, 5])
    decisions = asks = throttled = 0
    while decisions < HOUR_STEPS:
        dev = DeviceSession.start(world, cloud, user, int(rng.integers(2**62)))
        dev.step(False)  # initial list, not a request
        for _ in range(int(np.clip(rng.geometric(1 / 12), 2, 30)) - 1):
            value = model.value(request_features(dev.view))
            ask = pacer.decide(value)
            denied = ask and bool(rng.random() < throttle)
            pacer.update(ask, throttled=denied)
            dev.step(ask and not denied)  # a 429 serves from the local pool
            decisions, asks, throttled = decisions + 1, asks + ask, throttled + denied
            if decisions == HOUR_STEPS:
                break
    return decisions, asks, throttled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", type=int, default=30)
    ap.add_argument("--eta", type=float, default=0.5)
    ap.add_argument("--lam0", type=float, default=0.0, help="cold start λ (0) unless given")
    ap.add_argument("--burst", type=float, default=None, help="per-device token-bucket allowance")
    args = ap.parse_args()
    model = RequestValueModel(MODEL.read_bytes())
    _, users = split_users(1500)
    print("| budget | 429 share | fleet rate | device rate p5 / p50 / p95 | devices within ±5 % |")
    print("|---|---|---|---|---|")
    for budget in (0.05, 0.10, 0.20):
        for throttle in (0.0, 0.2):
            rates = []
            for d in range(args.devices):
                pacer = DualPacer(
                    budget, eta=args.eta, lam=args.lam0, backoff=0.5, burst=args.burst
                )
                n, asks, _ = device_hour(model, int(users[d]), 1000 + d, pacer, throttle)
                rates.append(asks / n)
            r = np.asarray(rates)
            within = np.mean(np.abs(r - budget) <= 0.05 * budget)
            p5, p50, p95 = np.percentile(r, [5, 50, 95])
            print(f"| {budget:.0%} | {throttle:.0%} | {r.mean():.4f} | {p5:.3f} / {p50:.3f} / "
                  f"{p95:.3f} | {within:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
