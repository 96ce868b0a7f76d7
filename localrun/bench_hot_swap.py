"""Time from moving `current` to a running agent and cloud replica serving the new version.

`python -m localrun.bench_hot_swap --trials 10 --agent-poll-s 1 --cloud-poll-s 1`

A cloud replica and a device agent (in this process, real gRPC/HTTP servers on port 0, a real
Redis) serve tiny signed artifacts. Two signed versions of the re-ranker, the request-value
model and the ranker bundle are in the registry beforehand, so the time measured is the swap
(poll, fetch, signature + sha256, ONNX session, reference swap), not training or export. Each
trial moves `current` of all three kinds to the other version and polls (every 5 ms) the
agent's /v1/status and the replica's Recommend until they report it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

from tandem_core.artifacts import MANIFEST
from tandem_core.release import VERSIONS, current_version, resolve, set_current
from tandem_core.signing import Signer


def swap_times(checks: dict[str, Callable[[], bool]], timeout_s: float) -> dict[str, float]:
    """Seconds from now until each check first holds (all polled every 5 ms)."""
    start = time.perf_counter()
    seen: dict[str, float] = {}
    while len(seen) < len(checks):
        for name, check in checks.items():
            if name not in seen and check():
                seen[name] = time.perf_counter() - start
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"no new version after {timeout_s} s: {sorted(seen)}")
        time.sleep(0.005)
    return seen


def second_bundle(kind_dir: Path, signer: Signer) -> str:
    """The current bundle re-signed as another version (same files, same embeddings)."""
    first = current_version(kind_dir)
    target = kind_dir / VERSIONS / f"{first}-b"
    shutil.copytree(resolve(kind_dir), target)
    manifest = json.loads((target / MANIFEST).read_text())
    (target / MANIFEST).write_text(json.dumps(signer.sign({**manifest, "version": target.name})))
    return target.name


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(trials: int, agent_poll_s: float, cloud_poll_s: float) -> dict[str, object]:
    from cloud_service.build import build_services
    from cloud_service.server import CloudServer
    from cloud_service.settings import BudgetSettings, CloudSettings, RequestSettings, StoreSettings
    from cloud_service.settings import ModelSettings as CloudModels
    from device_agent.build import build_agent
    from device_agent.server import AgentServer
    from device_agent.settings import AgentSettings, CloudLinkSettings, DeviceSettings
    from device_agent.settings import ModelSettings as DeviceModels
    from localrun.redis_server import running_redis
    from localrun.run_secrets import APP_SECRET, TOKEN_SECRET
    from protos.auth import device_token
    from training.tiny import release_tiny_reranker, release_tiny_value_model, write_tiny_artifacts

    with tempfile.TemporaryDirectory() as tmp, running_redis() as redis:
        tiny = write_tiny_artifacts(Path(tmp))
        signer = Signer.from_file(tiny.private_key)  # type: ignore[arg-type]
        assert tiny.value is not None
        kinds = {"reranker": tiny.device, "value_model": tiny.value, "bundle": tiny.bundle}
        first = {k: current_version(d) for k, d in kinds.items()}
        second = {
            "reranker": release_tiny_reranker(
                tiny.device, signer, tiny.embedding_version, tiny.dim, seed=1, promote=False
            ),
            "bundle": second_bundle(tiny.bundle, signer),
        }
        second["value_model"] = release_tiny_value_model(tiny.value, signer, seed=1)
        set_current(tiny.value, str(first["value_model"]))  # released as current: set back
        settings = CloudSettings(
            store=StoreSettings(redis_url=redis.url, key_prefix="benchswap"),
            budget=BudgetSettings(rate=1e6, burst=1e6),
            requests=RequestSettings(auth_secret=TOKEN_SECRET),
            models=CloudModels(
                bundle_dir=tiny.bundle, device_model_dir=tiny.device, value_model_dir=tiny.value,
                release_public_key_file=tiny.public_key, model_poll_s=cloud_poll_s,
            ),
        )  # fmt: skip
        cloud = CloudServer(build_services(settings), "127.0.0.1", 0, 0)
        cloud.start()
        agent_settings = DeviceSettings(
            agent=AgentSettings(http_port=0, token_secret=TOKEN_SECRET, app_secret=APP_SECRET),
            cloud=CloudLinkSettings(target=f"127.0.0.1:{cloud.grpc_port}", deadline_ms=500),
            models=DeviceModels(model_poll_s=agent_poll_s, release_public_key_file=tiny.public_key),
        )
        agent = AgentServer(build_agent(agent_settings), "127.0.0.1", 0)
        agent.start()
        agent_url = f"http://127.0.0.1:{agent.port}"
        recommend = f"http://127.0.0.1:{cloud.http_port}/v1/recommend"
        headers = {"X-Device-Token": device_token(TOKEN_SECRET.encode(), "bench")}

        def agent_has(reranker: str, value: str) -> bool:
            s = httpx.get(f"{agent_url}/v1/status").json()
            return bool(s["reranker_version"] == reranker and s["value_model"] == value)

        def replica_has(bundle: str) -> bool:
            body = {"device_id": "bench", "k": 4}
            return bool(httpx.post(recommend, json=body, headers=headers).json()["model_version"]
                        == bundle)  # fmt: skip

        agent_s: list[float] = []
        replica_s: list[float] = []
        try:
            for trial in range(trials):
                target = {k: str(v) for k, v in (second if trial % 2 == 0 else first).items()}
                time.sleep(agent_poll_s * (0.37 * trial % 1))  # vary the phase of the poll
                for kind, kind_dir in kinds.items():
                    set_current(kind_dir, target[kind])
                seen = swap_times(
                    {
                        "replica": partial(replica_has, target["bundle"]),
                        "agent": partial(agent_has, target["reranker"], target["value_model"]),
                    },
                    timeout_s=60 + 2 * max(agent_poll_s, cloud_poll_s),
                )
                replica_s.append(seen["replica"])
                agent_s.append(seen["agent"])
        finally:
            agent.stop()
            cloud.stop()
    return {
        "trials": trials, "agent_poll_s": agent_poll_s, "cloud_poll_s": cloud_poll_s,
        "agent_s": summary(agent_s), "replica_s": summary(replica_s),
    }  # fmt: skip


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3), "p90": round(pct(values, 0.9), 3),
        "max": round(max(values), 3), "min": round(min(values), 3),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--agent-poll-s", type=float, default=1.0)
    ap.add_argument("--cloud-poll-s", type=float, default=1.0)
    a = ap.parse_args(argv)
    print(json.dumps(run(a.trials, a.agent_poll_s, a.cloud_poll_s)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
