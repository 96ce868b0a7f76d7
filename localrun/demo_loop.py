"""The demo's model loop: the federated model published, gated and promoted while our fleet
plays, and what the cloud served over time beside the fleet's expected reward per step."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import redis

from cloud_service.store.breaker import Breaker
from cloud_service.store.federated_redis import FederatedStore
from localrun.fleet import FleetReport
from protos.auth import device_token
from tandem_core.signing import Signer, Verifier
from training.gate import Validation


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the loop started
    served: str  # the cloud's model_version ("" when the cloud did not answer)
    steps: int  # our fleet's steps so far
    reward: float  # their summed expected reward (the world's ground truth: judging only)


@dataclass
class ModelLoop:
    """A publisher thread (publish + gate each time the aggregator applied a round) and a
    monitor thread (the served version and our fleet's totals, every `sample_s`)."""

    redis_url: str
    prefix: str
    kind_dir: Path
    validation: Validation
    signer: Signer | None
    verifier: Verifier
    cloud_http: int
    secret: str
    sample_s: float = 0.5
    reports: list[FleetReport] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    publications: list[dict[str, object]] = field(default_factory=list)
    known_auc: dict[str, float] = field(default_factory=dict)  # each version scored once

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._stop_publishing = threading.Event()
        self._start = time.monotonic()
        self._threads = [
            threading.Thread(target=self._publish_loop, name="publish", daemon=True),
            threading.Thread(target=self._monitor_loop, name="monitor", daemon=True),
        ]

    def start(self) -> None:
        self._start = time.monotonic()
        for t in self._threads:
            t.start()

    def stop_publishing(self) -> None:
        """No new publication; one under way finishes."""
        self._stop_publishing.set()

    def settled(self, after_s: float) -> bool:
        """No publication under way, and the served version unchanged for `after_s` (or never
        changed): our fleet has played long enough under the last promotion to measure it."""
        if self._threads[0].is_alive():
            return False
        served = [s for s in self.samples if s.served]
        if not served or all(s.served == served[0].served for s in served):
            return True
        last = max(i for i in range(1, len(served)) if served[i].served != served[i - 1].served)
        return served[-1].t - served[last].t >= after_s

    def stop(self) -> None:
        """Stop both threads (a publication under way finishes) after a last sample; a
        publisher still running after 120 s is recorded as such."""
        self._stop_publishing.set()
        self._threads[0].join(timeout=120)
        if self._threads[0].is_alive():
            self.publications.append({"error": "a publication was still running at the end"})
        self._sample()
        self._stop.set()
        self._threads[1].join(timeout=10)

    def _publish_loop(self) -> None:
        from training.federated.publish import publish_gated

        client = redis.Redis.from_url(self.redis_url, socket_timeout=30)
        store = FederatedStore(client, self.prefix, Breaker(1.0))
        published = 0  # version 0 is the served ranker itself: nothing to publish
        try:
            while not self._stop_publishing.wait(1.0):
                try:
                    version = store.version()
                except Exception:  # the store unreachable: ask again in a second
                    continue
                if version <= published:
                    continue
                started = time.monotonic()
                try:  # any failure is this publication's outcome, recorded; the loop goes on
                    manifest, report = publish_gated(
                        store, self.kind_dir, self.validation, self.signer,
                        verifier=self.verifier, known_auc=self.known_auc,
                    )  # fmt: skip
                    published = int(manifest["federated_version"])
                    entry: dict[str, object] = {**asdict(report), "federated_version": published}
                except Exception as exc:  # PublishError, store, registry or gate errors
                    published = version
                    entry = {"error": f"{type(exc).__name__}: {exc}", "federated_version": version}
                entry["t"] = round(started - self._start, 1)
                entry["publish_and_gate_s"] = round(time.monotonic() - started, 1)
                self.publications.append(entry)
        finally:
            client.close()

    def _served(self) -> str:
        device = "demo-monitor"
        try:
            url = f"http://127.0.0.1:{self.cloud_http}/v1/recommend"
            token = device_token(self.secret.encode(), device)
            r = httpx.post(url, json={"device_id": device, "k": 1},
                           headers={"X-Device-Token": token}, timeout=2)  # fmt: skip
            return str(r.json()["model_version"]) if r.status_code == 200 else ""
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return ""

    def _sample(self) -> None:
        served = self._served()
        steps = reward = 0.0
        for rep in self.reports:
            with rep.lock:
                steps, reward = steps + rep.steps, reward + rep.expected_reward
        self.samples.append(
            Sample(round(time.monotonic() - self._start, 2), served, int(steps), reward)
        )

    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.sample_s):
            self._sample()


@dataclass
class Window:
    """A stretch of time the cloud served one version, and our fleet's steps in it."""

    version: str
    from_s: float
    to_s: float
    steps: int = 0
    reward: float = 0.0

    def row(self) -> dict[str, object]:
        per_step = round(self.reward / self.steps, 4) if self.steps else None
        return {"version": self.version, "from_s": self.from_s, "to_s": self.to_s,
                "steps": self.steps, "reward_per_step": per_step}  # fmt: skip


def served_windows(samples: list[Sample]) -> list[dict[str, object]]:
    """The served versions in time order with our fleet's expected reward per step under each;
    the steps between two samples count for the version the later one saw."""
    windows: list[Window] = []
    prev: Sample | None = None
    for s in (s for s in samples if s.served):
        if not windows or windows[-1].version != s.served:
            windows.append(Window(s.served, prev.t if prev else s.t, s.t))
        w = windows[-1]
        if prev is not None:
            w.steps += s.steps - prev.steps
            w.reward += s.reward - prev.reward
        w.to_s, prev = s.t, s
    return [w.row() for w in windows]
