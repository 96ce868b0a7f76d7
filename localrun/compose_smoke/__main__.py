"""python -m localrun.compose_smoke [--mode fast|full]: the stack up with a real Docker engine.

Starts an engine if none runs (installing docker.io where apt is available), builds the images
(base images from Debian packages when the official ones are not on this host), `up --wait`,
checks every service's health, an app's page and events through an agent (and a malformed
device id refused), runs locust against the agents, asserts zero failures and a cloud request rate
within the budget, then `down -v` and stops what it started. Exit codes: 0 green, 1 the stack
failed, 3 no engine could be had here (the reason is printed). --json writes the timings, image
sizes, health and load figures (docs/deploy.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from localrun.compose_smoke.checks import (
    app_round_trip,
    load_result,
    ready,
    request_rate,
)
from localrun.compose_smoke.engine import Engine, EngineUnavailable
from localrun.compose_smoke.stack import Mode, Stack, StackFailed

NO_ENGINE = 3
BUDGET_SLACK = 0.02  # absolute: a short run's rate is a few hundred steps' worth


def run(args: argparse.Namespace) -> dict[str, object]:
    engine = Engine()
    try:
        engine.ensure(install=not args.no_install)
    except EngineUnavailable:
        engine.stop()
        raise
    stack = Stack(dict(engine.env), Mode.of(args.mode, args.users, args.run_time),
                  budget=args.budget, cluster=args.cluster)  # fmt: skip
    report: dict[str, object] = {"mode": args.mode, "redis_cluster": args.cluster}
    try:
        with stack.step("base images"):
            report["bases"] = stack.choose_bases(
                args.base, engine.env,
                lambda: engine.ensure_tool("mmdebstrap", "mmdebstrap", not args.no_install),
            )  # fmt: skip
        with stack.step("build"):
            stack.build()
        with stack.step("up --wait"):
            stack.up()
        with stack.step("health"):
            report["health"] = stack.health()
            report.update(_app_checks(stack))
        with stack.step("locust"), tempfile.TemporaryDirectory() as tmp:
            stack.load(Path(tmp))
            result = load_result(Path(tmp))
        report["load"] = result.__dict__
        report["request_rate"] = _rate(stack)
        if args.cluster:
            keys = report["cluster_keys"] = stack.cluster_keys()
            if min(keys) == 0:
                raise StackFailed(f"a cluster node holds no key: {keys}")
        report["image_mib"] = stack.image_sizes()
        if result.failures or result.requests == 0:
            raise StackFailed(
                f"locust: {result.failures} failures of {result.requests}: "
                f"{result.failure_kinds}; the rest of the report: {report}"
            )
        if report["request_rate"] > args.budget + BUDGET_SLACK:  # type: ignore[operator]
            raise StackFailed(f"cloud request rate {report['request_rate']} over the budget")
        return report
    except (StackFailed, AssertionError, httpx.HTTPError) as exc:
        print(stack.logs()[-6000:], file=sys.stderr)
        raise StackFailed(str(exc)) from exc
    finally:
        report["seconds"] = stack.timings
        if not args.keep:
            with stack.step("down -v"):
                stack.down()
            engine.stop()


def _agents(stack: Stack) -> list[str]:
    return [stack.published("agent", 8100, 1), stack.published("agent", 8100, 2),
            stack.published("agent-train", 8100)]  # fmt: skip


def _app_checks(stack: Stack) -> dict[str, object]:
    with httpx.Client(timeout=5.0) as client:
        cloud = stack.published("cloud", 8000)
        if not ready(cloud, client):
            raise StackFailed(f"cloud {cloud}/readyz is not 200")
        agents = _agents(stack)
        for url in agents:
            deadline = time.monotonic() + 60
            while not ready(url, client):
                if time.monotonic() > deadline:
                    raise StackFailed(f"agent {url}/readyz is not 200")
                time.sleep(1)
        return {"app": app_round_trip(agents[0], client, stack.env["TANDEM_APP_SECRET"])}


def _rate(stack: Stack) -> float:
    with httpx.Client(timeout=5.0) as client:
        return round(request_rate(_agents(stack), client), 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("fast", "full"), default="fast")
    p.add_argument("--base", choices=("auto", "official", "debian"), default="auto")
    p.add_argument("--users", type=int, default=None, help="locust users (fast 40, full 200)")
    p.add_argument("--run-time", default=None, help="locust run time (fast 30s, full 2m)")
    p.add_argument("--budget", type=float, default=0.10, help="DEVICE_REQUEST_BUDGET")
    p.add_argument("--cluster", action="store_true", help="the cloud on a 3-master Redis Cluster")
    p.add_argument("--no-install", action="store_true", help="never apt-get install docker.io")
    p.add_argument("--keep", action="store_true", help="leave the stack and engine running")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    try:
        report = run(args)
    except EngineUnavailable as exc:
        print(f"[compose-smoke] no Docker engine here: {exc}", file=sys.stderr)
        return NO_ENGINE
    except StackFailed as exc:
        print(f"[compose-smoke] FAILED: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print("[compose-smoke] green")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
