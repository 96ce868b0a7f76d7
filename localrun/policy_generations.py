"""Policy generations over the running system: the fleet logs with exploration, a value model is
trained from the cloud's event stream, gated, released signed, and the agents hot-swap it.

python -m localrun.policy_generations --generations 3 [--sessions 300] [--untrained --scale tiny]

The processes are the demo's (a real Redis, the cloud service, `--agents` device agents; no
federated training), with the agents' ε-greedy exploration on and a short registry poll.
Generation 0 starts with an empty value-model registry the cloud serves, so the agents decide on
the shift score. Each generation the fleet plays `--sessions` sessions; the agents forward the
app events to the cloud (ReportEvents → the Redis stream), the `training.event_logs` consumer
writes them to `decisions-*.csv`, and `training.policy.fleet_logs.decision_rows` turns them into
one row per decision with its realised reward over the next `--horizon` pages. Without the
forced rows (initial list, refill) and the rows with no choice (propensity 1), devices split by
a hash of their id: TARNet is fitted on the train devices of every generation so far and gated
on this generation's held-out devices — its DR-AUUC against the serving rule's, minus
`--tolerance` (log-only, as `training.policy.generations`, the offline version of this loop). A
promoted model is released, signed by the demo's release key, into the registry the cloud
serves, and the next generation starts once every agent's /status reports its version.
The world's expected reward per step (FleetReport, the truth) only judges the generations.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from localrun import topology
from localrun.demo import PREFIX, SECRET
from localrun.fleet import FleetReport, run_fleet
from localrun.processes import Child, start_child
from localrun.redis_server import running_redis
from simulator.tables import markdown_table
from simulator.world import World
from training.models_job import Models, add_spec_arguments, prepare_models, spec_of
from training.policy.fleet_logs import REWARD, DecisionRows, decision_rows

SHIFT_SCORE = "shift score"  # what an agent's /status reports without a value model
Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LearnerRows:
    """Decision rows a learner may use: the policy's own randomised choices, P(ask) in (0, 1)."""

    x: np.ndarray  # (n, d) float32
    w: np.ndarray  # (n,) bool: asked the cloud
    y: np.ndarray  # (n,) realised reward over the horizon
    p_ask: np.ndarray  # (n,) float64: logged P(ask) (the logs carry P(the action taken))
    device: np.ndarray  # (n,) str

    def __len__(self) -> int:
        return int(self.w.shape[0])

    def select(self, mask: np.ndarray) -> LearnerRows:
        return LearnerRows(self.x[mask], self.w[mask], self.y[mask], self.p_ask[mask],
                           self.device[mask])  # fmt: skip

    @staticmethod
    def concat(parts: Sequence[LearnerRows]) -> LearnerRows:
        return LearnerRows(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("x", "w", "y", "p_ask", "device")))  # fmt: skip

    def arms(self) -> tuple[int, int]:
        """Rows that asked, rows that did not."""
        asked = int(self.w.sum())
        return asked, len(self) - asked


def learner_rows(rows: DecisionRows) -> LearnerRows:
    """Drop the forced rows and those whose action had propensity 1 (no token: nothing to
    learn about the choice); convert the logged P(action taken) into P(ask)."""
    p_ask = np.where(rows.w, rows.p, 1.0 - rows.p)
    # a failed ask (timeout, 429) is not the treatment logged; P(ask) outside [0.01, 0.99] is
    # no agent's exploration (its least is ε·(1 − q)) but a hostile propensity: dropped
    keep = ~rows.forced & ~rows.failed & (p_ask >= 0.01) & (p_ask <= 0.99)
    return LearnerRows(rows.x[keep], rows.w[keep], rows.y[keep], p_ask[keep], rows.device[keep])


def held_out(devices: np.ndarray) -> np.ndarray:
    """A stable half of the devices, by the first byte of the sha256 of their id."""
    return np.array([hashlib.sha256(d.encode()).digest()[0] % 2 == 1 for d in devices.tolist()],
                    dtype=bool)  # fmt: skip


def gate_scores(candidate: Scorer, serving: Scorer, rows: LearnerRows) -> tuple[float, float]:
    """The log-only gate of `training.policy.generations`, on fleet-log rows."""
    from training.policy.generations import gate_scores as gate

    return gate(candidate, serving, rows.x, rows.w, rows.y, rows.p_ask)


def shift_score(x: np.ndarray) -> np.ndarray:
    return x[:, 0].astype(np.float64)  # feature 0 of the request-value features


@dataclass(frozen=True)
class LogFigures:
    """What the decision logs say about a generation, exploration and refills included."""

    pages: int  # (device, step) pages with a logged event
    requests: int  # pages that asked the cloud, a session's first page not counted
    reward: float  # clicks + 3 × purchases, all pages


def log_figures(paths: Sequence[Path]) -> LogFigures:
    import csv

    pages: dict[tuple[str, int], bool] = {}
    reward, seen = 0.0, set()
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row["entry_id"] in seen:  # at-least-once files: a re-written row once
                    continue
                seen.add(row["entry_id"])
                step = int(row.get("step") or 0)
                if step > 0:
                    pages.setdefault((row["device"], step), row["asked_cloud"] == "1")
                reward += REWARD.get(row["action"], 0.0)
    requests = sum(asked for (_, step), asked in pages.items() if step > 1)
    return LogFigures(len(pages), requests, reward)


@dataclass(frozen=True)
class Generation:
    index: int
    deciding_with: str  # "shift score" or the value model's version (agents' /status)
    sessions: int
    steps: int  # app decision steps (agents' /status)
    request_rate: float  # cloud requests / steps (agents' /status; exploration, refills in)
    logged_rate: float  # the same from the logs
    reward: float  # realised reward per logged page (fleet_logs.REWARD: a purchase counts 3)
    app_reward: float  # realised clicks + 3 × purchases per app step (the world's definition)
    expected: float  # the world's expected reward per step (truth, judging only)
    threshold: float  # the agents' mean price λ at the end
    rows: int  # decision rows of this generation (before the learner's filter)
    train_rows: int  # learner rows of the train devices, every generation so far
    held_out_rows: int  # learner rows of this generation's held-out devices
    candidate_auuc: float | None
    serving_auuc: float | None
    promoted: bool
    released: str | None  # the version released when promoted
    seconds: float
    note: str = ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_spec_arguments(p)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--sessions", type=int, default=300, help="fleet sessions per generation")
    p.add_argument("--users", type=int, default=8, help="concurrent app users")
    p.add_argument("--agents", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=240.0, help="fleet play per generation")
    p.add_argument("--budget", type=float, default=0.10, help="share of steps that may ask")
    p.add_argument("--exploration", type=float, default=0.10, help="the agents' ε")
    p.add_argument("--tolerance", type=float, default=0.02, help="the gate's DR-AUUC slack")
    p.add_argument("--horizon", type=int, default=6, help="pages of realised reward per row")
    p.add_argument("--poll-s", type=float, default=1.0, help="the agents' registry poll")
    p.add_argument("--min-arm", type=int, default=20,
                   help="rows per action needed in train and held-out to fit and gate")  # fmt: skip
    p.add_argument("--fit-epochs", type=int, default=40, help="TARNet epochs")
    p.add_argument("--cloud-rate", type=float, default=1000.0, help="global cloud budget /s")
    return p.parse_args(argv)


def agent_env(args: argparse.Namespace, models: Models, cloud: Child, name: str) -> dict[str, str]:
    env = topology.agent_env(models, cloud.ports["grpc"], SECRET, "value", name, args.budget)
    return env | {"DEVICE_EXPLORATION": str(args.exploration),
                  "DEVICE_MODEL_POLL_S": str(args.poll_s)}  # fmt: skip


def start_system(
    args: argparse.Namespace, models: Models, redis_url: str, workdir: Path, children: list[Child]
) -> list[Child]:
    """The cloud, then the agents (each appended to `children` as soon as it runs)."""
    env = topology.cloud_env(models, redis_url, SECRET, args.cloud_rate, PREFIX)
    children.append(start_child("cloud", "cloud_service.main", env, workdir,
                                workdir / "cloud.log"))  # fmt: skip
    print(f"cloud service: ports {children[0].ports}", flush=True)
    for i in range(args.agents):
        name = f"agent-gen-{i}"
        children.append(start_child(name, "device_agent.main",
                                    agent_env(args, models, children[0], name), workdir,
                                    workdir / f"{name}.log"))  # fmt: skip
    return children[1:]


def statuses(agents: Sequence[Child]) -> list[dict[str, Any]]:
    return [httpx.get(f"http://127.0.0.1:{a.ports['http']}/v1/status", timeout=5).json()
            for a in agents]  # fmt: skip


def wait_until(check: Callable[[list[dict[str, Any]]], bool], agents: Sequence[Child],
               timeout_s: float, what: str) -> list[dict[str, Any]]:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        now = statuses(agents)
        if check(now):
            return now
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached after {timeout_s:.0f} s: {now}")
        time.sleep(0.2)


def serving_label(now: list[dict[str, Any]]) -> str:
    labels = sorted({str(s["value_model"]) for s in now})
    if len(labels) != 1:
        raise RuntimeError(f"the agents decide with different value models: {labels}")
    return labels[0]


def drain(redis_url: str, out: Path) -> int:
    """Every event the cloud has logged and not yet written, into `out`'s decision files."""
    from cloud_service.store.keys import Keys
    from cloud_service.store.redis_store import build_redis
    from training.event_logs import LogWriter, consume

    client = build_redis(redis_url, socket_timeout_s=10, retries=3)
    try:
        writer = LogWriter(out, rows_per_file=1_000_000, max_files=1000)
        return consume(client, Keys(PREFIX).events(), writer, consumer="generations")
    finally:
        client.close()


@dataclass
class Serving:
    """The rule the agents decide with and what the gate compares a candidate with."""

    label: str = SHIFT_SCORE
    score: Scorer = shift_score


@dataclass(frozen=True)
class Gate:
    train_rows: int
    held_out_rows: int
    candidate_auuc: float | None = None
    serving_auuc: float | None = None
    model: Any = None  # the fitted candidate (a TwoHeadNet), when one was fitted
    note: str = ""

    def passes(self, tolerance: float) -> bool:
        if self.candidate_auuc is None or self.serving_auuc is None:
            return False
        return bool(self.candidate_auuc >= self.serving_auuc - tolerance)


def fit_and_gate(history: Sequence[LearnerRows], current: LearnerRows, serving: Serving,
                 min_arm: int, epochs: int) -> Gate:  # fmt: skip
    """TARNet on the train devices of every generation so far, gated on this generation's
    held-out devices; no fit when either action has fewer than `min_arm` rows on a side."""
    import torch

    from training.policy.uplift import FitConfig, mlp_scorer, tarnet

    train = LearnerRows.concat([h.select(~held_out(h.device)) for h in history])
    test = current.select(held_out(current.device))
    if min(train.arms() + test.arms()) < min_arm:
        return Gate(len(train), len(test), note=f"too few rows per action: train "
                    f"{train.arms()}, held-out {test.arms()} (asked, kept)")  # fmt: skip
    torch.set_num_threads(1)  # the machine's cores belong to the processes under test
    model = tarnet(train.x, train.w, train.y, train.p_ask, cfg=FitConfig(epochs=epochs))
    cand, cur = gate_scores(mlp_scorer(model), serving.score, test)
    return Gate(len(train), len(test), float(cand), float(cur), model)


def release(gate: Gate, index: int, workdir: Path, kind_dir: Path, args: argparse.Namespace,
            verifier: Any) -> Serving:  # fmt: skip
    """Export the candidate, release it signed into the served registry, read it back verified."""
    from device_agent.policy.value import RequestValueModel
    from tandem_core.release import VALUE_MODEL, load_verified
    from training.models_job import serving_key
    from training.policy.uplift import export_onnx
    from training.release import VALUE_ONNX, release_value_model

    staged = workdir / f"candidate-{index}.onnx"
    export_onnx(gate.model, str(staged))
    signer, _ = serving_key(spec_of(args))
    metrics = {"dr_auuc": gate.candidate_auuc, "serving_dr_auuc": gate.serving_auuc,
               "generation": index, "train_rows": gate.train_rows,
               "held_out_rows": gate.held_out_rows, "source": "fleet event logs"}  # fmt: skip
    version = release_value_model(kind_dir, staged, signer, {"validation": metrics})
    onnx = load_verified(kind_dir, verifier, (VALUE_MODEL,)).files[VALUE_ONNX]
    return Serving(version, RequestValueModel(onnx).values)


def app_reward(fleet: FleetReport, purchase_reward: float) -> float:
    """What the app saw: a purchased item was clicked too, so it earns 1 + purchase_reward."""
    return (fleet.clicks + purchase_reward * fleet.purchases) / fleet.steps if fleet.steps else 0.0


def wait_served(agents: Sequence[Child], version: str, timeout_s: float) -> None:
    def served(now: list[dict[str, Any]]) -> bool:
        return all(s["value_model"] == version for s in now)

    wait_until(served, agents, timeout_s, f"every agent on {version}")


def forwarded(now: list[dict[str, Any]]) -> bool:
    return all(s["events_forwarding"]["queued"] == 0 for s in now)


def deltas(before: list[dict[str, Any]], after: list[dict[str, Any]], key: str) -> int:
    return sum(int(a[key]) - int(b[key]) for a, b in zip(after, before, strict=True))


@dataclass
class Loop:
    """The running system's generations: what the agents decide with and every log so far."""

    args: argparse.Namespace
    world: World
    agents: list[Child]
    redis_url: str
    workdir: Path
    kind_dir: Path  # the value-model registry the cloud serves
    verifier: Any
    serving: Serving = field(default_factory=Serving)
    history: list[LearnerRows] = field(default_factory=list)

    def play(self, g: int, logs: Path) -> tuple[FleetReport, int, int, int]:
        """The fleet's sessions of generation g, every event forwarded and written to `logs`;
        the fleet's report, the agents' decision steps and cloud requests, the events."""
        a, before = self.args, statuses(self.agents)
        urls = [f"http://127.0.0.1:{c.ports['http']}" for c in self.agents]
        fleet = run_fleet(self.world, urls, a.sessions, a.max_seconds, a.users,
                          a.seed + 1000 * g, f"gen{g}")  # fmt: skip
        after = wait_until(forwarded, self.agents, 60.0, "every event forwarded")
        steps, requests = deltas(before, after, "steps"), deltas(before, after, "cloud_requests")
        return fleet, steps, requests, drain(self.redis_url, logs)

    def generation(self, g: int) -> Generation:
        a, start = self.args, time.perf_counter()
        now = statuses(self.agents)
        label = serving_label(now)
        if label != self.serving.label:
            raise RuntimeError(f"agents decide with {label}, expected {self.serving.label}")
        logs = self.workdir / "logs" / f"gen-{g}"
        fleet, steps, requests, events = self.play(g, logs)
        rows = decision_rows(sorted(logs.glob("decisions-*.csv")), a.horizon)
        self.history.append(learner_rows(rows))
        gate = fit_and_gate(self.history, self.history[-1], self.serving, a.min_arm, a.fit_epochs)
        released = None
        if gate.passes(a.tolerance):
            self.serving = release(gate, g, self.workdir, self.kind_dir, a, self.verifier)
            released = self.serving.label
            wait_served(self.agents, released, 10 * a.poll_s + 30)
        figures = log_figures(sorted(logs.glob("decisions-*.csv")))
        lam = float(np.mean([s["threshold"] for s in statuses(self.agents)]))
        print(f"generation {g}: {events} events logged", flush=True)
        return Generation(
            g, label, fleet.sessions, steps, requests / steps if steps else 0.0,
            figures.requests / figures.pages if figures.pages else 0.0,
            figures.reward / figures.pages if figures.pages else 0.0,
            app_reward(fleet, self.world.cfg.purchase_reward),
            fleet.expected_reward / fleet.steps if fleet.steps else 0.0, lam, len(rows),
            gate.train_rows, gate.held_out_rows, gate.candidate_auuc, gate.serving_auuc,
            released is not None, released, time.perf_counter() - start, gate.note,
        )  # fmt: skip


def run_generations(args: argparse.Namespace, models: Models, workdir: Path) -> list[Generation]:
    from tandem_core.signing import build_verifier

    verifier = build_verifier(None, models.public_key, models.public_key is None)
    kind_dir = workdir / "registry" / "value_model"  # empty: generation 0 has no value model
    kind_dir.mkdir(parents=True)
    models = replace(models, value_model=kind_dir)
    children: list[Child] = []
    with running_redis() as redis:
        try:
            agents = start_system(args, models, redis.url, workdir, children)
            loop = Loop(args, World(models.world), agents, redis.url, workdir, kind_dir, verifier)
            report = []
            for g in range(args.generations):
                report.append(loop.generation(g))
                print(report[-1], flush=True)
        finally:
            codes = {c.name: c.stop() for c in reversed(children)}
            print(f"stopped: {json.dumps(codes)}", flush=True)
    return report


def table(report: Sequence[Generation]) -> list[str]:
    head = ["gen", "deciding with", "sessions", "steps", "realised rate (status / logs)",
            "reward / step (logs / app)", "E[reward] / step (truth)", "λ at end",
            "rows (all / train / held-out)", "candidate DR-AUUC", "serving DR-AUUC", "promoted",
            "seconds"]  # fmt: skip

    def auuc(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    rows = [(r.index, r.deciding_with, r.sessions, r.steps,
             f"{r.request_rate:.3f} / {r.logged_rate:.3f}", f"{r.reward:.3f} / {r.app_reward:.3f}",
             f"{r.expected:.4f}", f"{r.threshold:.3f}",
             f"{r.rows} / {r.train_rows} / {r.held_out_rows}", auuc(r.candidate_auuc),
             auuc(r.serving_auuc), r.released or ("no: " + r.note if r.note else "no"),
             f"{r.seconds:.0f}") for r in report]  # fmt: skip
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # children: one thread per request
    t0 = time.perf_counter()
    models = prepare_models(spec_of(args))
    workdir = args.out / "generations"  # not the demo's run/: both may run from one --out
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    report = run_generations(args, models, workdir)
    print("\n## Policy generations (running system)\n")
    print("\n".join(table(report)))
    wall = time.perf_counter() - t0
    print(f"\nscale {args.scale}, {args.agents} agents, budget {args.budget:.0%}, ε "
          f"{args.exploration}, horizon {args.horizon}, tolerance {args.tolerance}; "
          f"wall {wall:.0f} s")  # fmt: skip
    out = workdir / "generations.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                               "wall_seconds": wall,
                               "generations": [asdict(r) for r in report]}, indent=1))  # fmt: skip
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
