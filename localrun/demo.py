"""`make demo`: models, then Redis + cloud + device agents as processes, a fleet, a report.

1. Models: the world, the DIN ranker (+ its serving bundle), the device re-ranker and the
   request-value model; reused from `--out` when present (`--retrain` forces training).
2. The system: a real Redis (embedded when none is configured), the cloud service, the
   federated aggregator and device agents as child processes (our agents' devices also train
   the ranker on their own events and push updates; `--no-train` leaves that out); the fleet
   plays the same world sessions through the agents' REST API three times — AlwaysQ (ask
   every step), NoQ (never ask) and our value-paced policy — and the report compares them.
3. The model loop (when devices train): from the start of our policy's pass, each time the
   aggregator has applied a round the federated model is published as a candidate of the
   served bundle's registry (a private copy under `--out`/run), gated against `current` on the
   world's validation split and promoted if it passes; the cloud hot-swaps it. Our agents play
   on for `--loop-seconds` after the compared pass, and the report prints the served versions
   over time with the fleet's expected reward per step under each.
Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from localrun import topology
from localrun.demo_loop import ModelLoop
from localrun.demo_report import PolicyRun, print_report, write_plot
from localrun.fleet import FleetReport, run_fleet
from localrun.processes import Child, start_child
from localrun.redis_server import running_redis
from localrun.run_secrets import TOKEN_SECRET
from simulator.world import World
from training.models_job import Models, add_spec_arguments, prepare_models, spec_of

SECRET = TOKEN_SECRET  # random each run
PREFIX = "demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_spec_arguments(p)
    p.add_argument("--sessions", type=int, default=400, help="fleet sessions per policy")
    p.add_argument("--users", type=int, default=12, help="concurrent app users")
    p.add_argument("--max-seconds", type=float, default=40.0, help="per policy")
    p.add_argument("--agents", type=int, default=2, help="agent processes for our policy")
    p.add_argument("--budget", type=float, default=0.10, help="share of steps that may ask")
    p.add_argument("--cloud-rate", type=float, default=1000.0, help="global cloud budget /s")
    p.add_argument("--no-train", action="store_true", help="no federated training on devices")
    p.add_argument(
        "--loop-seconds",
        type=float,
        default=45.0,
        help="our agents play on this long after the compared pass, the model loop "
        "publishing and gating meanwhile",
    )
    p.add_argument(
        "--after-seconds",
        type=float,
        default=20.0,
        help="then on until the last promotion is served this long (≤ 90 s more)",
    )
    p.add_argument("--models-only", action="store_true", help="write the models, then exit")
    return p.parse_args(argv)


def cloud_env(args: argparse.Namespace, models: Models, redis_url: str) -> dict[str, str]:
    # the bundle's `current` checked twice a second: a promotion is served within ~0.5 s
    env = topology.cloud_env(models, redis_url, SECRET, args.cloud_rate, PREFIX)
    return env | {"CLOUD_MODEL_POLL_S": "0.5"}


def agent_env(
    args: argparse.Namespace, models: Models, cloud_port: int, policy: str, name: str
) -> dict[str, str]:
    env = topology.agent_env(models, cloud_port, SECRET, policy, name, args.budget)
    if policy == "value" and not args.no_train:  # our devices also train the ranker (issue 6)
        env |= {"DEVICE_TRAIN": "true", "DEVICE_TRAIN_INTERVAL_S": "5",
                "DEVICE_TRAIN_MIN_EXAMPLES": "20", "DEVICE_TRAIN_EPOCHS": "1"}  # fmt: skip
    return env


def aggregator_env(args: argparse.Namespace, models: Models, redis_url: str) -> dict[str, str]:
    """Small rounds so that a one-minute demo sees a few of them applied."""
    return cloud_env(args, models, redis_url) | {
        "CLOUD_FL_DEVICES_PER_ROUND": "8", "CLOUD_FL_ROUND_S": "10",
        "CLOUD_FL_QUORUM_SHARE": "0.5", "CLOUD_AGGREGATOR_NAME": "demo-aggregator",
    }  # fmt: skip


def federated_summary(redis_url: str, agents: list[Any], loop: ModelLoop) -> dict[str, object]:
    """What federated training did during the run: the global version (rounds applied), the
    devices' rounds, and the model loop's publications and served versions."""
    import httpx
    import redis

    from cloud_service.store.breaker import Breaker
    from cloud_service.store.federated_redis import FederatedStore
    from localrun.demo_loop import served_windows

    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        version = FederatedStore(client, PREFIX, Breaker(1.0)).version()
    finally:
        client.close()
    outcomes: Counter[str] = Counter()
    for a in agents:
        status = httpx.get(f"http://127.0.0.1:{a.ports['http']}/v1/status", timeout=2).json()
        outcomes.update(status.get("federated_rounds") or {})
    return {"rounds_applied": version, "device_outcomes": dict(outcomes),
            "publications": loop.publications, "served": served_windows(loop.samples),
            "validation": loop.validation.source, "registry": str(loop.kind_dir)}  # fmt: skip


def model_loop(args: argparse.Namespace, models: Models, redis_url: str, cloud: Child) -> ModelLoop:
    """The publisher and monitor of the loop, on the validation split of the demo's world."""
    from tandem_core.signing import build_verifier
    from training.gate import world_validation
    from training.models_job import GATE_VALIDATION, serving_key

    signer, _ = serving_key(spec_of(args))
    verifier = build_verifier(None, models.public_key, models.public_key is None)
    validation = world_validation(models.world, args.out / GATE_VALIDATION)
    return ModelLoop(redis_url, PREFIX, models.bundle, validation, signer, verifier,
                     cloud.ports["http"], SECRET)  # fmt: skip


def served_copy(models: Models, workdir: Path) -> Models:
    """The cloud serves a copy of the bundle's registry, so the loop's promotions stay in this
    run and the next demo starts from the models job's bundle again."""
    target = workdir / "registry" / models.bundle.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(models.bundle, target)
    return replace(models, bundle=target)


def start_cloud_side(
    args: argparse.Namespace, models: Models, redis_url: str, workdir: Path, children: list[Child]
) -> Child:
    """The cloud service and, when devices train, the aggregator, each appended to `children` as
    soon as it runs (so a failed start still stops what did start); returns the cloud."""
    cloud = start_child(
        "cloud", "cloud_service.main", cloud_env(args, models, redis_url), workdir,
        workdir / "cloud.log",
    )  # fmt: skip
    children.append(cloud)
    print(f"cloud service: pid {cloud.proc.pid}, ports {cloud.ports}", flush=True)
    print(f"live dashboard: http://127.0.0.1:{cloud.ports['http']}/dashboard", flush=True)
    if args.no_train:
        return cloud
    aggregator = start_child(
        "aggregator", "cloud_service.federated.aggregator",
        aggregator_env(args, models, redis_url), workdir, workdir / "aggregator.log",
    )  # fmt: skip
    children.append(aggregator)
    print(f"aggregator: pid {aggregator.proc.pid}", flush=True)
    return cloud


def play_policy(
    args: argparse.Namespace, models: Models, world: World, cloud: Child, policy: str,
    n_agents: int, workdir: Path, children: list[Child], report: FleetReport | None = None,
) -> tuple[PolicyRun, list[Child]]:  # fmt: skip
    """Start `n_agents` agents with `policy` (appended to `children`) and play the fleet on them."""
    agents = []
    for i in range(n_agents):
        name = f"agent-{policy}-{i}"
        env = agent_env(args, models, cloud.ports["grpc"], policy, name)
        agents.append(start_child(name, "device_agent.main", env, workdir, workdir / f"{name}.log"))
        children.append(agents[-1])
    urls = [f"http://127.0.0.1:{a.ports['http']}" for a in agents]
    print(f"fleet on {len(agents)} agent(s), policy {policy} ...", flush=True)
    start = time.perf_counter()
    fleet = run_fleet(world, urls, args.sessions, args.max_seconds, args.users, args.seed, policy,
                      report=report)  # fmt: skip
    return PolicyRun(policy, fleet, time.perf_counter() - start, args.budget), agents


def play_on(args: argparse.Namespace, world: World, agents: list[Child], loop: ModelLoop) -> None:
    """Our agents play new sessions, in 10 s chunks, for `--loop-seconds` while the loop
    publishes; then on until the last promotion has been served for `--after-seconds` (at
    most 90 s more), so each promotion has steps after it to measure."""
    urls = [f"http://127.0.0.1:{a.ports['http']}" for a in agents]
    print(f"model loop: our fleet plays on for {args.loop_seconds:.0f} s+ ...", flush=True)
    report, start, chunk = loop.reports[-1], time.monotonic(), 0
    while True:
        # sessions enough for the chunk; the plan is drawn up front, so not a huge number
        run_fleet(world, urls, 2 * args.sessions, 10.0, args.users, args.seed + 1 + chunk,
                  f"value-loop{chunk}", report=report)  # fmt: skip
        chunk += 1
        elapsed = time.monotonic() - start
        if elapsed >= args.loop_seconds:
            loop.stop_publishing()
            if loop.settled(args.after_seconds) or elapsed >= args.loop_seconds + 90:
                return


def run_system(
    args: argparse.Namespace, models: Models, workdir: Path, federated: dict[str, object]
) -> list[PolicyRun]:
    world = World(models.world)
    models = served_copy(models, workdir)
    runs: list[PolicyRun] = []
    children: list[Child] = []
    with running_redis() as redis:
        print(f"\nRedis: {redis.source} at {redis.url}", flush=True)
        try:
            cloud = start_cloud_side(args, models, redis.url, workdir, children)
            # ours last: the compared passes before it run on the models job's ranker
            for policy, n_agents in (("always", 1), ("never", 1)):
                runs.append(play_policy(args, models, world, cloud, policy, n_agents, workdir,
                                        children)[0])  # fmt: skip
            loop = None if args.no_train else model_loop(args, models, redis.url, cloud)
            report = FleetReport()
            if loop is not None:
                loop.reports.append(report)
                loop.start()
            try:
                run, agents = play_policy(args, models, world, cloud, "value", args.agents,
                                          workdir, children, report)  # fmt: skip
                runs.insert(0, run)
                if loop is not None:
                    loop.reports.append(FleetReport())
                    play_on(args, world, agents, loop)
            finally:  # the loop's threads never outlive the children they talk to
                if loop is not None:
                    loop.stop()
            if loop is not None:
                federated.update(federated_summary(redis.url, agents, loop))
        finally:
            codes = {c.name: c.stop() for c in reversed(children)}
            print(f"\nstopped: {json.dumps(codes)}", flush=True)
    (workdir.parent / "children.json").write_text(
        json.dumps({c.name: c.proc.pid for c in children})
    )
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"Tandem demo: world scale={args.scale} seed={args.seed}", flush=True)
    models = prepare_models(spec_of(args))
    if args.models_only:
        print(f"models: bundle {models.bundle}, device model {models.device}")
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # children: one thread per request
    workdir = args.out / "run"  # children's logs and port files
    workdir.mkdir(exist_ok=True)
    federated: dict[str, object] = {}
    runs = run_system(args, models, workdir, federated)
    summary = print_report(runs, federated)
    (args.out / "report.json").write_text(json.dumps(summary, indent=2))
    plot = write_plot(runs, args.out / "demo_report.png")
    print(f"\nreport: {args.out / 'report.json'}; plot: {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
