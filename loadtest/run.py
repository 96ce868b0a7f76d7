"""Load test of the request budget: the topology as processes, locust per budget level, report.

For each budget level: fresh device agents with DEVICE_REQUEST_BUDGET = the level, locust
headless (its own process: locust monkey-patches whatever imports it) with app users following
world sessions, the agents' and the cloud's counters polled every second; the realised cloud
request rate (cloud Recommend calls / app recommend requests) is checked against the budget.
Then an open-loop run at a fixed arrival rate gives the headline p99, and optionally locust's
gRPC users hit the cloud directly. Everything started is stopped at the end, even on error.

    python -m loadtest.run --budget 0.05 0.10 0.20 --users 40 --duration 60s \\
        --out artifacts/loadtest
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from loadtest import report
from loadtest.sampler import Sampler, write_samples
from loadtest.topology import SECRET, ModelPaths, Processes, cloud_env
from localrun.processes import Child
from localrun.redis_server import running_redis
from localrun.run_secrets import APP_SECRET

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budget", type=float, nargs="+", default=[0.05, 0.10, 0.20])
    p.add_argument("--users", type=int, default=40, help="locust app users (one device each)")
    p.add_argument("--spawn-rate", type=float, default=0.0, help="users/s (0: all in 5 s)")
    p.add_argument("--duration", default="60s", help="per level, locust's format (60s, 2m)")
    p.add_argument("--think-s", type=float, default=0.1, help="mean pause between feed steps")
    p.add_argument("--agents", type=int, default=2, help="device agent processes")
    p.add_argument("--out", type=Path, default=Path("artifacts/loadtest"))
    p.add_argument(
        "--models",
        type=Path,
        default=Path("artifacts/demo"),
        help="trained models as `make demo` leaves them (trained here if missing)",
    )
    p.add_argument("--scale", default="default", help="world scale of the trained models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--untrained", action="store_true", help="tiny random-init models (tests)")
    p.add_argument("--cloud-rate", type=float, default=1000.0, help="cloud's global budget /s")
    p.add_argument("--tolerance", type=float, default=0.02, help="allowed overshoot of a budget")
    p.add_argument("--open-budget", type=float, default=0.10)
    p.add_argument(
        "--open-rate",
        type=float,
        default=0.0,
        help="steps/s of the open-loop run (0: half the closed-loop throughput)",
    )
    p.add_argument("--open-seconds", type=float, default=60.0, help="0 skips the open loop")
    p.add_argument("--open-devices", type=int, default=50)
    p.add_argument("--grpc-users", type=int, default=0, help="gRPC users on the cloud (0: skip)")
    p.add_argument("--grpc-duration", default="20s")
    return p.parse_args(argv)  # fmt: skip


def seconds(duration: str) -> float:
    """Locust's run-time format (60, 60s, 2m, 1h30m) in seconds."""
    total, number = 0.0, ""
    for ch in duration.strip():
        if ch.isdigit() or ch == ".":
            number += ch
            continue
        total += float(number) * {"s": 1, "m": 60, "h": 3600}[ch]
        number = ""
    return total + (float(number) if number else 0.0)


def prepare_models(args: argparse.Namespace) -> ModelPaths:
    if args.untrained:
        from simulator.scales import SCALES
        from training.tiny import write_tiny_artifacts

        dirs = write_tiny_artifacts(args.out / "tiny", seed=args.seed)
        return ModelPaths(dirs.bundle, dirs.device, None, SCALES["tiny"], "tiny", dirs.public_key)
    from training.models_job import ModelSpec
    from training.models_job import prepare_models as prepare_world_models

    m = prepare_world_models(ModelSpec(scale=args.scale, seed=args.seed, out=args.models))
    value = m.value_model.resolve() if m.value_model is not None else None
    key = m.public_key.resolve() if m.public_key is not None else None
    return ModelPaths(m.bundle.resolve(), m.device.resolve(), value, m.world, args.scale, key)


def tool_env(models: ModelPaths, extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ, "TANDEM_WORLD_SCALE": models.scale, "TANDEM_APP_SECRET": APP_SECRET,
        "TANDEM_WORLD_SEED": str(models.world.seed),
        "TANDEM_PAGE_SIZE": str(models.world.page_size),
        "TANDEM_POOL_SIZE": str(models.world.pool_size), **extra,
    }  # fmt: skip


def locust_cmd(
    locustfile: str, users: int, spawn: float, duration: str, host: str, csv: Path, user_class: str
) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / locustfile), "--headless",
        "--users", str(users), "--spawn-rate", str(spawn), "--run-time", duration,
        "--host", host, "--csv", str(csv), "--csv-full-history", "--only-summary",
        "--stop-timeout", "5", "--loglevel", "WARNING", user_class,
    ]  # fmt: skip


def status(urls: list[str]) -> list[dict[str, Any]]:
    import httpx

    return [httpx.get(f"{u}/v1/status", timeout=5).json() for u in urls]


def run_level(
    procs: Processes, args: argparse.Namespace, models: ModelPaths, cloud: Child, budget: float
) -> dict[str, Any]:
    tag = f"b{budget:.2f}"
    agents = procs.start_agents(models, cloud.ports["grpc"], budget, args.agents, tag)
    urls = [f"http://127.0.0.1:{a.ports['http']}" for a in agents]
    spawn = args.spawn_rate or max(args.users / 5.0, 1.0)
    cmd = locust_cmd(
        "locustfile.py", args.users, spawn, args.duration, urls[0], args.out / tag, "AppUser"
    )
    env = tool_env(models, {"TANDEM_AGENT_URLS": ",".join(urls), "TANDEM_DEVICE_PREFIX": tag,
                            "TANDEM_THINK_S": str(args.think_s)})  # fmt: skip
    print(
        f"level {tag}: {args.users} users on {len(urls)} agent(s) for {args.duration} ...",
        flush=True,
    )
    sampler = Sampler(urls, f"http://127.0.0.1:{cloud.ports['http']}").start()
    try:
        code = procs.run_tool(f"locust-{tag}", cmd, env, seconds(args.duration) + 90, ROOT)
    finally:
        samples = sampler.stop()
    if not (args.out / f"{tag}_stats.csv").exists():
        raise RuntimeError(
            f"locust wrote no stats (exit {code}): see {procs.workdir}/locust-{tag}.log"
        )
    write_samples(args.out / f"{tag}_samples.csv", samples)
    final = status(urls)
    procs.stop(agents)
    first, last = samples[0], samples[-1]
    return {
        "tag": tag, "budget": budget, "users": args.users, "duration_s": seconds(args.duration),
        "agents": len(urls), "locust_exit_code": code,
        "app_steps": last.app_steps - first.app_steps,
        "paced_requests": last.paced_requests - first.paced_requests,
        "cloud_recommends": last.cloud_recommends - first.cloud_recommends,
        "outcomes": merged_outcomes(final), "final_threshold": last.threshold,
    }  # fmt: skip


def merged_outcomes(statuses: list[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for s in statuses:
        for outcome, n in s["outcomes"].items():
            merged[outcome] = merged.get(outcome, 0) + int(n)
    return merged


def open_rate(args: argparse.Namespace, levels: list[dict[str, Any]]) -> float:
    """The asked rate, else half the closed-loop throughput at the nearest budget level."""
    if args.open_rate > 0 or not levels:
        return args.open_rate or 20.0
    nearest = min(levels, key=lambda lv: abs(lv["budget"] - args.open_budget))
    return round(max(nearest["app_steps"] / nearest["duration_s"] / 2, 1.0), 1)


def run_open_loop(
    procs: Processes, args: argparse.Namespace, models: ModelPaths, cloud: Child, rate: float
) -> dict[str, Any]:
    agents = procs.start_agents(models, cloud.ports["grpc"], args.open_budget, args.agents, "open")
    urls = [f"http://127.0.0.1:{a.ports['http']}" for a in agents]
    out = args.out / "openloop.json"
    cmd = [
        sys.executable, "-m", "loadtest.openloop", "--agents", *urls, "--rate", str(rate),
        "--seconds", str(args.open_seconds), "--devices", str(args.open_devices), "--out", str(out),
    ]  # fmt: skip
    print(f"open loop: {rate} steps/s for {args.open_seconds:.0f} s ...", flush=True)
    out.unlink(missing_ok=True)
    code = procs.run_tool("openloop", cmd, tool_env(models, {}), args.open_seconds + 90, ROOT)
    procs.stop(agents)
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    return {**result, "budget": args.open_budget, "exit_code": code, "devices": args.open_devices}


def run_grpc(
    procs: Processes, args: argparse.Namespace, models: ModelPaths, cloud: Child
) -> dict[str, Any]:
    host = f"grpc://127.0.0.1:{cloud.ports['grpc']}"
    spawn = max(args.grpc_users / 5.0, 1.0)
    cmd = locust_cmd(
        "grpc_locustfile.py",
        args.grpc_users,
        spawn,
        args.grpc_duration,
        host,
        args.out / "grpc",
        "CloudGrpcUser",
    )
    env = tool_env(models, {"TANDEM_TOKEN_SECRET": SECRET, "TANDEM_DEVICE_PREFIX": "grpc"})
    print(f"gRPC users on the cloud: {args.grpc_users} for {args.grpc_duration} ...", flush=True)
    code = procs.run_tool("locust-grpc", cmd, env, seconds(args.grpc_duration) + 90, ROOT)
    return {
        "users": args.grpc_users,
        "duration_s": seconds(args.grpc_duration),
        "locust_exit_code": code,
    }


def run_system(args: argparse.Namespace, models: ModelPaths, procs: Processes) -> dict[str, Any]:
    result: dict[str, Any] = {"levels": []}
    with running_redis(appendonly=False) as redis:
        if redis.pid is not None:
            procs.pids["redis"] = redis.pid
        try:
            cloud = procs.start(
                "cloud", "cloud_service.main", cloud_env(models, redis.url, args.cloud_rate)
            )
            for budget in args.budget:
                result["levels"].append(run_level(procs, args, models, cloud, budget))
            if args.open_seconds > 0:
                rate = open_rate(args, result["levels"])
                result["open_loop"] = run_open_loop(procs, args, models, cloud, rate)
            if args.grpc_users > 0:
                result["grpc"] = run_grpc(procs, args, models, cloud)
        finally:
            procs.stop_all()
            print(f"stopped: {json.dumps(procs.exit_codes)}", flush=True)
    result["exit_codes"] = procs.exit_codes
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # children: one thread per request
    models = prepare_models(args)
    workdir = args.out / "run"
    workdir.mkdir(exist_ok=True)
    procs = Processes(workdir)
    start = time.perf_counter()
    try:
        result = run_system(args, models, procs)
    finally:
        (args.out / "children.json").write_text(json.dumps(procs.pids, indent=2))
    argv_used = argv if argv is not None else sys.argv[1:]
    result.update(
        command="python -m loadtest.run " + shlex.join(argv_used), tolerance=args.tolerance,
        world_scale=models.scale, value_model=models.value_model is not None,
        seconds=round(time.perf_counter() - start, 1),
    )  # fmt: skip
    (args.out / "run.json").write_text(json.dumps(result, indent=2))
    md, png = report.write(args.out)
    print(md.read_text())
    print(f"report: {md}; plot: {png}")
    return 0 if report.all_within(args.out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
