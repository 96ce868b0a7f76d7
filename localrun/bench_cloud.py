"""Cloud serving benchmark: Recommend over REST and gRPC beside hello-world servers, same run.

`python -m localrun.bench_cloud --bundle artifacts/ranker/serving --seconds 8`

Every server runs as its own process; the load comes from client processes (closed loop, one
blocking keep-alive connection per client thread). Throughput is reported as a ratio of a
hello-world FastAPI endpoint and a bare gRPC echo measured the same way in the same run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from localrun.run_secrets import TOKEN_SECRET
from protos.actions import BY_NAME, to_wire

SECRET = TOKEN_SECRET  # random each run
HELLO = "localrun.bench_servers"


@dataclass(frozen=True)
class Target:
    name: str
    transport: str  # rest | grpc
    port: int


@dataclass(frozen=True)
class Result:
    target: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def recommend_bodies(n_items: int, popularity: np.ndarray, n: int = 512) -> list[dict]:
    """Requests like a device's: 20 recent behaviours among popular items, k = 50."""
    rng = np.random.default_rng(0)
    pool = np.argsort(-popularity)[:5000]
    bodies = []
    for i in range(n):
        items = rng.choice(pool, size=20, replace=False)
        actions = rng.choice(["click", "exposure"], size=20, p=[0.4, 0.6])
        bodies.append({
            "device_id": f"bench-{i}", "k": 50,
            "recent": [{"item_id": int(it), "action": str(a), "timestamp_ms": 1000 + j}
                       for j, (it, a) in enumerate(zip(items, actions, strict=True))],
        })  # fmt: skip
    return bodies


def _rest_caller(target: Target, bodies: list[dict]) -> Callable[[int], bool]:
    import http.client

    from cloud_service.auth import device_token

    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
    if target.name == "hello-fastapi":

        def hello(_: int) -> bool:
            conn.request("GET", "/hello")
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200

        return hello
    encoded = [
        (json.dumps(b).encode(), device_token(SECRET.encode(), str(b["device_id"]))) for b in bodies
    ]

    def call(i: int) -> bool:
        body, token = encoded[i % len(encoded)]
        headers = {"content-type": "application/json", "x-device-token": token}
        conn.request("POST", "/v1/recommend", body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200

    return call


def _grpc_caller(target: Target, bodies: list[dict]) -> Callable[[int], bool]:
    import grpc

    from cloud_service.auth import device_token
    from protos.tandem.v1 import tandem_pb2 as pb
    from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{target.port}")
    if target.name == "echo-grpc":
        echo = channel.unary_unary("/bench.Echo/Echo")
        payload = b"x" * 64

        def call_echo(_: int) -> bool:
            return echo(payload, timeout=10) == payload

        return call_echo
    stub = pb_grpc.TandemStub(channel)
    requests = [
        (
            pb.RecommendRequest(
                device_id=str(b["device_id"]), k=int(b["k"]),
                recent=[pb.Behavior(item_id=r["item_id"], action=to_wire(BY_NAME[r["action"]]),
                                    timestamp_ms=r["timestamp_ms"]) for r in b["recent"]],
            ),
            [("x-device-token", device_token(SECRET.encode(), str(b["device_id"])))],
        )
        for b in bodies
    ]  # fmt: skip

    def call(i: int) -> bool:
        request, meta = requests[i % len(requests)]
        return len(stub.Recommend(request, metadata=meta, timeout=10).items) > 0

    return call


def _client_process(
    target: Target, bodies: list[dict], threads: int, seconds: float, offset: int, out: Any
) -> None:
    import threading

    make = _rest_caller if target.transport == "rest" else _grpc_caller
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start_at = time.perf_counter() + 0.5  # connections are set up before the clock starts
    stop_at = start_at + seconds

    def run(t: int) -> None:
        i = offset + t * 100_003
        for _ in range(100):  # the server may still be starting: connect and warm up
            try:
                call = make(target, bodies)
                call(i)
                break
            except OSError:
                time.sleep(0.1)
        while time.perf_counter() < start_at:
            time.sleep(0.001)
        while (now := time.perf_counter()) < stop_at:
            i += 1
            try:
                ok = call(i)
            except Exception:
                ok = False
            latencies[t].append(time.perf_counter() - now)
            errors[t] += not ok

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(([x for part in latencies for x in part], sum(errors)))


def measure(target: Target, bodies: list[dict], concurrency: int, seconds: float) -> Result:
    processes = min(concurrency, 2)
    ctx = mp.get_context("spawn")  # no fork: grpc and threads do not survive it
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_client_process,
            args=(target, bodies, concurrency // processes, seconds, p * 7919, queue),
        )
        for p in range(processes)
    ]
    for p in procs:
        p.start()
    parts = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    lat = np.array([x for part in parts for x in part[0]]) * 1000
    return Result(
        target.name, concurrency, len(lat) / seconds, float(np.percentile(lat, 50)),
        float(np.percentile(lat, 99)), sum(p[1] for p in parts),
    )  # fmt: skip


def wait_ports(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args!r} did not start")
        time.sleep(0.1)
    return dict(json.loads(path.read_text()))


def stage_breakdown(redis_url: str, bundle_dir: Path, bodies: list[dict]) -> dict[str, float]:
    """Mean ms per stage of one Recommend, in process on one thread (no transport)."""
    from cloud_service.build import build_services
    from cloud_service.domain import Action, Behavior, RecommendQuery
    from cloud_service.settings import (
        BudgetSettings,
        CloudSettings,
        ModelSettings,
        RequestSettings,
        StoreSettings,
    )

    settings = CloudSettings(
        store=StoreSettings(redis_url=redis_url, key_prefix="benchstages"),
        requests=RequestSettings(auth_secret=SECRET),
        # a serving benchmark, not a security one: the bundle's signature is not checked here
        models=ModelSettings(
            bundle_dir=bundle_dir, device_model_dir=Path("/nonexistent"), allow_unsigned=True
        ),
        budget=BudgetSettings(rate=1e9, burst=1e9),
    )
    services = build_services(settings)
    rec = services.recommend
    queries = [
        RecommendQuery(str(b["device_id"]), int(b["k"]), tuple(
            Behavior(r["item_id"], BY_NAME[r["action"]], r["timestamp_ms"]) for r in b["recent"]
        ))
        for b in bodies[:200]
    ]  # fmt: skip
    tokens = [services.auth.token_for(q.device_id) for q in queries]
    clicked = [np.array([b.item_id for b in q.recent if b.action == Action.CLICK]) for q in queries]
    excluded = [np.array([b.item_id for b in q.recent]) for q in queries]
    online = rec.recommender

    def mean_ms(fn: Callable[[int], object]) -> float:
        start = time.perf_counter()
        for i in range(len(queries)):
            fn(i)
        return (time.perf_counter() - start) / len(queries) * 1000

    candidates = [online.retriever.retrieve(clicked[i], excluded[i]) for i in range(len(queries))]
    return {
        "whole Recommend (domain service)": mean_ms(lambda i: rec.recommend(queries[i], tokens[i])),
        "retrieval (3 sources, 100k items)": mean_ms(
            lambda i: online.retriever.retrieve(clicked[i], excluded[i])
        ),
        "DIN ranking (ONNX Runtime)": mean_ms(lambda i: online.rank(clicked[i], candidates[i])),
        "session load (Redis GET)": mean_ms(lambda i: rec.sessions.load(queries[i].device_id)),
        "budget token (Redis Lua)": mean_ms(lambda i: rec.budget.take()),
    }


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", *args], env={**os.environ, **env})


def report(results: list[Result], cores: int) -> str:
    by = {(r.target, r.concurrency): r for r in results}
    base = {"rest": "hello-fastapi", "grpc": "echo-grpc"}
    lines = [
        "| target | concurrency | requests/s | p50 ms | p99 ms | errors | vs hello-world |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        transport = "rest" if r.target in ("recommend-rest", "hello-fastapi") else "grpc"
        ref = by.get((base[transport], r.concurrency))
        ratio = "" if r.target in base.values() or ref is None else f"{r.rps / ref.rps:.3f}"
        lines.append(
            f"| {r.target} | {r.concurrency} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.errors} | {ratio} |"
        )
    lines.append("")
    lines.append(f"Machine: {cores} cores, servers and clients share them.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/ranker/serving"))
    parser.add_argument("--device-models", type=Path, default=Path("artifacts/device"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/cloud.json"))
    args = parser.parse_args(argv)

    from cloud_service.registry.bundle import load_bundle
    from localrun.redis_server import running_redis

    bundle = load_bundle(args.bundle)
    bodies = recommend_bodies(bundle.n_items, bundle.popularity)
    procs: list[subprocess.Popen[bytes]] = []
    with running_redis() as redis, tempfile.TemporaryDirectory() as tmp:
        try:
            cloud_env = {
                "CLOUD_REDIS_URL": redis.url, "CLOUD_BUNDLE_DIR": str(args.bundle),
                "CLOUD_DEVICE_MODEL_DIR": str(args.device_models), "CLOUD_GRPC_PORT": "0",
                "CLOUD_HTTP_PORT": "0", "CLOUD_PORTS_FILE": f"{tmp}/cloud.json",
                "CLOUD_AUTH_SECRET": SECRET, "CLOUD_KEY_PREFIX": "bench",
                "CLOUD_BUDGET_RATE": "1e9", "CLOUD_BUDGET_BURST": "1e9",
                "CLOUD_ALLOW_UNSIGNED": "true",  # serving speed is measured, not signatures
            }  # fmt: skip
            procs.append(start(["cloud_service.main"], cloud_env))
            procs.append(start([HELLO, "--ports-file", f"{tmp}/hello.json"], {}))
            cloud = wait_ports(Path(f"{tmp}/cloud.json"), procs[0])
            hello = wait_ports(Path(f"{tmp}/hello.json"), procs[1])
            targets = [
                Target("hello-fastapi", "rest", hello["http"]),
                Target("recommend-rest", "rest", cloud["http"]),
                Target("echo-grpc", "grpc", hello["grpc"]),
                Target("recommend-grpc", "grpc", cloud["grpc"]),
            ]
            results = []
            for target in targets:
                for c in args.concurrency:
                    results.append(measure(target, bodies, c, args.seconds))
                    print(results[-1], flush=True)
            stages = stage_breakdown(redis.url, args.bundle, bodies)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=30)
    table = report(results, os.cpu_count() or 0)
    table += "\n\n| stage (in process, one thread) | mean ms |\n|---|---|\n"
    table += "\n".join(f"| {name} | {ms:.2f} |" for name, ms in stages.items())
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"results": [r.__dict__ for r in results], "stages": stages}
    args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
