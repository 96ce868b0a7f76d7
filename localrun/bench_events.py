"""Events pipeline: throughput into the stream, and the agent's latency with forwarding on vs off.

`python -m localrun.bench_events [--steps 1500] [--events 200000]`

Redis, the cloud and the agent run as separate processes (tiny untrained artifacts: the models
are not what is measured). Throughput: one in-process forwarder (the agent's, batches of 200,
one call in flight) sends `--events` events of 50 devices to the cloud's ReportEvents; timed
from the first offer until the stream holds them all. Latency: one app client calls the agent's
`POST /v1/recommend` then `POST /v1/events` (4 exposures + 1 click) for `--steps` steps over 20
devices, once with `DEVICE_EVENTS_FORWARD=false` and once with `true`; client-side p50/p99.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from cloud_service.store.keys import Keys
from device_agent.cloud_client import CloudClient
from device_agent.forwarder import EventForwarder
from device_agent.ports import ReportedEvent
from localrun.app_tokens import AppTokens
from localrun.processes import start_child
from localrun.redis_server import free_port, running_redis
from localrun.run_secrets import APP_SECRET, TOKEN_SECRET
from protos.auth import device_token
from training.tiny import ArtifactDirs, write_tiny_artifacts

SECRET = TOKEN_SECRET  # random each run


def keys_env(dirs: ArtifactDirs, prefix: str) -> dict[str, str]:
    key = getattr(dirs, "public_key", None)
    return {f"{prefix}_RELEASE_PUBLIC_KEY_FILE": str(key)} if key else {}


def throughput(target: str, redis_url: str, n_events: int) -> dict[str, float]:
    client = redis.Redis.from_url(redis_url)
    start_len = client.xlen(Keys().events())
    cloud = CloudClient(target, 1.0, lambda d: device_token(SECRET.encode(), d))
    fwd = EventForwarder(cloud, batch_size=200, capacity=n_events, interval_s=0.005)
    events = [ReportedEvent(i % 1000, i % 3, i, i % 4, "r", "local", False, 0.1, 0.2, 1.0)
              for i in range(n_events)]  # fmt: skip
    t0 = time.perf_counter()
    fwd.start()
    for d in range(50):
        fwd.offer(f"bench-{d}", events[d::50])
    while client.xlen(Keys().events()) - start_len < n_events:
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    fwd.stop()
    cloud.close()
    stored = client.xlen(Keys().events()) - start_len
    client.close()
    return {"events": n_events, "stored": stored, "seconds": seconds,
            "events_per_s": n_events / seconds}  # fmt: skip


def app_latency(agent: str, steps: int) -> dict[str, float]:
    rec, ev = [], []
    with httpx.Client(timeout=5, auth=AppTokens(APP_SECRET)) as http:
        for step in range(steps):
            device = f"phone-{step % 20}"
            t0 = time.perf_counter()
            page = http.post(f"{agent}/v1/recommend", json={"device_id": device, "k": 4})
            rec.append(time.perf_counter() - t0)
            items = [it["item_id"] for it in page.json()["items"]]
            events: list[dict[str, Any]] = [
                {"item_id": i, "action": "exposure", "timestamp_ms": step * 10 + j}
                for j, i in enumerate(items)
            ]
            events.append({"item_id": items[0], "action": "click", "timestamp_ms": step * 10 + 9})
            t0 = time.perf_counter()
            http.post(f"{agent}/v1/events", json={"device_id": device, "events": events})
            ev.append(time.perf_counter() - t0)
        status = http.get(f"{agent}/v1/status").json()
    r, e = np.array(rec[100:]) * 1000, np.array(ev[100:]) * 1000  # the first 100: warm-up
    out: dict[str, Any] = {"forwarding": status.get("events_forwarding")}
    for name, ms in (("recommend", r), ("events", e)):
        out[f"{name}_p50_ms"] = float(np.percentile(ms, 50))
        out[f"{name}_p99_ms"] = float(np.percentile(ms, 99))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--events", type=int, default=200_000)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    dirs = write_tiny_artifacts(work / "artifacts")
    out: dict[str, Any] = {}
    with running_redis() as handle:
        port = free_port()
        cloud_env = {
            "CLOUD_REDIS_URL": handle.url, "CLOUD_GRPC_PORT": str(port), "CLOUD_HTTP_PORT": "0",
            "CLOUD_BUNDLE_DIR": str(dirs.bundle), "CLOUD_DEVICE_MODEL_DIR": str(dirs.device),
            "CLOUD_AUTH_SECRET": SECRET, "CLOUD_BUDGET_RATE": "100000",
            "CLOUD_BUDGET_BURST": "100000", **keys_env(dirs, "CLOUD"),
        }  # fmt: skip
        cloud = start_child("cloud", "cloud_service.main", cloud_env, work, work / "cloud.log")
        try:
            out["throughput"] = throughput(f"127.0.0.1:{port}", handle.url, args.events)
            for forward in ("false", "true"):
                agent_env = {
                    "DEVICE_CLOUD_TARGET": f"127.0.0.1:{port}", "DEVICE_HTTP_PORT": "0",
                    "DEVICE_TOKEN_SECRET": SECRET, "DEVICE_APP_SECRET": APP_SECRET,
                    "DEVICE_EVENTS_FORWARD": forward,
                    **keys_env(dirs, "DEVICE"),
                }  # fmt: skip
                agent = start_child("agent", "device_agent.main", agent_env, work,
                                    work / f"agent-{forward}.log")  # fmt: skip
                try:
                    url = f"http://127.0.0.1:{agent.ports['http']}"
                    out[f"forward_{forward}"] = app_latency(url, args.steps)
                finally:
                    agent.stop()
        finally:
            cloud.stop()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
