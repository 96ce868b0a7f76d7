"""Polls the agents' /v1/status and the cloud's /metrics once a second while a load runs."""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since the sampler started
    app_steps: int  # feed steps the agents served (all devices)
    paced_requests: int  # cloud requests the agents count against the budget
    cloud_recommends: int  # Recommend calls the cloud received over gRPC (any outcome)
    threshold: float  # mean λ over the agents


def cloud_recommends(metrics_text: str) -> int:
    """Recommend calls over gRPC in the cloud's Prometheus text, summed over status codes."""
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            labels = s.labels
            if s.name == "tandem_cloud_requests_total" and labels.get("method") == "Recommend":
                total += s.value if labels.get("transport") == "grpc" else 0.0
    return int(total)


def agent_totals(statuses: list[dict[str, float]]) -> tuple[int, int, float]:
    steps = sum(int(s["steps"]) for s in statuses)
    requests = sum(int(s["cloud_requests"]) for s in statuses)
    lam = sum(float(s["threshold"]) for s in statuses) / max(len(statuses), 1)
    return steps, requests, lam


class Sampler:
    """A background thread; `stop()` returns every sample taken (one more at the very end)."""

    def __init__(self, agent_urls: list[str], cloud_http: str, period_s: float = 1.0) -> None:
        self.agent_urls, self.cloud_http, self.period_s = agent_urls, cloud_http, period_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._client = httpx.Client(timeout=2.0)
        self._t0 = time.monotonic()

    def take(self) -> Sample:
        statuses = [self._client.get(f"{u}/v1/status").json() for u in self.agent_urls]
        steps, requests, lam = agent_totals(statuses)
        cloud = cloud_recommends(self._client.get(f"{self.cloud_http}/metrics").text)
        return Sample(round(time.monotonic() - self._t0, 3), steps, requests, cloud, lam)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.samples.append(self.take())
            except (httpx.HTTPError, ValueError, KeyError):
                continue  # a missed sample is a gap in the plot, not a failed run

    def start(self) -> Sampler:
        self.samples.append(self.take())
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(timeout=5)
        self.samples.append(self.take())
        self._client.close()
        return self.samples


def write_samples(path: Path, samples: list[Sample]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Sample)])
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)


def read_samples(path: Path) -> list[Sample]:
    with path.open(newline="") as f:
        return [
            Sample(float(r["t_s"]), int(r["app_steps"]), int(r["paced_requests"]),
                   int(r["cloud_recommends"]), float(r["threshold"]))
            for r in csv.DictReader(f)
        ]  # fmt: skip
