"""The live status page (GET /dashboard) and the stats it polls, read from the Prometheus metrics.

Rates are deltas between samples kept in a small ring buffer that each app owns. The cloud never
sees the answers a device serves locally, so the cloud/local share is summed from the configured
device agents' /v1/status, each polled with a short deadline; a dead agent is reported, not raised.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.samples import Sample as PromSample
from pydantic import BaseModel

from cloud_service import metrics
from cloud_service.settings import BudgetSettings, CloudSettings

RING_SIZE = 240  # samples kept: at >= MIN_SPACING_S apart, at least two minutes of history
MIN_SPACING_S = 0.5  # several open pages polling must not crowd the ring with near-duplicates
HISTORY_POINTS = 60
Buckets = tuple[tuple[float, float], ...]  # (upper bound in s, cumulative count), +Inf last


@dataclass(frozen=True)
class AgentCounts:
    cloud: int
    local: int


@dataclass(frozen=True)
class Sample:
    """Counter values at one moment (monotonic clock)."""

    t: float
    requests: dict[tuple[str, bool], float]  # (method, answered OK) -> calls, both transports
    budget: dict[str, float]  # decision (allowed / rejected) -> Recommend calls
    latency: Buckets  # Recommend, both transports
    agents: dict[str, AgentCounts]  # reachable agents only


class MethodStats(BaseModel):
    method: str
    calls: int  # since this replica started
    errors: int  # answered with any code but OK
    calls_per_s: float | None  # over the window; None until there are two samples
    errors_per_s: float | None


class BudgetStats(BaseModel):
    allowed: int
    rejected: int
    allowed_per_s: float | None
    rejected_per_s: float | None
    rejected_share: float | None  # of the window's decisions
    limit_per_s: float  # CLOUD_BUDGET_RATE: the shared bucket's refill, all replicas together
    burst: float


class LatencyStats(BaseModel):
    method: str
    calls: int  # counted in the quantiles
    p50_ms: float | None
    p99_ms: float | None
    over_window: bool  # False: since start, before the ring holds a baseline


class AgentStatus(BaseModel):
    url: str
    reachable: bool
    error: str | None = None
    cloud_answers: int = 0
    local_answers: int = 0
    devices: int = 0
    request_rate: float | None = None  # the agent's cloud requests per app answer


class AnswerStats(BaseModel):
    """App answers of the reachable agents, since each started."""

    cloud: int
    local: int
    cloud_share: float | None
    window_cloud_share: float | None
    agents: list[AgentStatus]


class HistoryPoint(BaseModel):
    age_s: float  # seconds before generated_at
    recommend_per_s: float
    allowed_per_s: float
    rejected_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    cloud_share: float | None


class DashboardStats(BaseModel):
    generated_at: float  # unix seconds
    window_s: float  # what the rates span; 0 before there are two samples
    requests: list[MethodStats]
    budget: BudgetStats
    latency: LatencyStats
    answers: AnswerStats
    history: list[HistoryPoint]


def samples_of(metric: MetricWrapperBase, suffix: str) -> Iterator[PromSample]:
    for family in metric.collect():
        yield from (s for s in family.samples if s.name.endswith(suffix))


def read_metrics(t: float, agents: dict[str, AgentCounts]) -> Sample:
    requests: dict[tuple[str, bool], float] = {}
    for s in samples_of(metrics.REQUESTS, "_total"):
        key = (s.labels["method"], s.labels["code"] == "OK")
        requests[key] = requests.get(key, 0.0) + s.value
    budget = {s.labels["decision"]: s.value for s in samples_of(metrics.BUDGET, "_total")}
    buckets: dict[float, float] = {}
    for s in samples_of(metrics.LATENCY, "_bucket"):
        if s.labels["method"] == "Recommend":
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
    return Sample(t, requests, budget, tuple(sorted(buckets.items())), agents)


def quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket that holds rank q·n."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank and count > below:
            if math.isinf(upper):
                return lower  # past the last finite bound: that bound, as Prometheus does
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def bucket_delta(new: Buckets, old: Buckets) -> Buckets:
    before = dict(old)
    return tuple((le, n - before.get(le, 0.0)) for le, n in new)


def answer_delta(new: Sample, old: Sample) -> tuple[int, int]:
    cloud = local = 0
    for url, n in new.agents.items():
        o = old.agents.get(url)
        if o is None or n.cloud < o.cloud or n.local < o.local:
            continue  # not seen at both ends, or restarted in between
        cloud, local = cloud + n.cloud - o.cloud, local + n.local - o.local
    return cloud, local


def share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


class SampleRing:
    """The last samples of one app; used only on the event loop, so it needs no lock."""

    def __init__(self, size: int, min_spacing_s: float) -> None:
        self.samples: deque[Sample] = deque(maxlen=size)
        self.min_spacing_s = min_spacing_s

    def baseline(self, now: float, window_s: float) -> Sample | None:
        """The newest sample at least window_s old, else the oldest one there is."""
        older = [s for s in self.samples if s.t <= now - window_s]
        return older[-1] if older else (self.samples[0] if self.samples else None)

    def add(self, sample: Sample) -> None:
        if not self.samples or sample.t - self.samples[-1].t >= self.min_spacing_s:
            self.samples.append(sample)

    def pairs(self, n: int) -> list[tuple[Sample, Sample]]:
        kept = list(self.samples)[-(n + 1) :]
        return list(itertools.pairwise(kept))


def per_s(new: float, old: float, span: float) -> float | None:
    return (new - old) / span if span > 0 else None


def request_stats(now: Sample, base: Sample, span: float) -> list[MethodStats]:
    methods = sorted({m for m, _ in now.requests} | {"Recommend"})
    out = []
    for m in methods:
        ok, bad = now.requests.get((m, True), 0.0), now.requests.get((m, False), 0.0)
        ok0, bad0 = base.requests.get((m, True), 0.0), base.requests.get((m, False), 0.0)
        out.append(MethodStats(
            method=m, calls=int(ok + bad), errors=int(bad),
            calls_per_s=per_s(ok + bad, ok0 + bad0, span), errors_per_s=per_s(bad, bad0, span),
        ))  # fmt: skip
    return out


def budget_stats(now: Sample, base: Sample, span: float, budget: BudgetSettings) -> BudgetStats:
    allowed, rejected = now.budget.get("allowed", 0.0), now.budget.get("rejected", 0.0)
    d_allowed = allowed - base.budget.get("allowed", 0.0)
    d_rejected = rejected - base.budget.get("rejected", 0.0)
    return BudgetStats(
        allowed=int(allowed), rejected=int(rejected),
        allowed_per_s=d_allowed / span if span else None,
        rejected_per_s=d_rejected / span if span else None,
        rejected_share=share(d_rejected, d_allowed + d_rejected) if span else None,
        limit_per_s=budget.rate, burst=budget.burst,
    )  # fmt: skip


def latency_stats(now: Sample, base: Sample, span: float) -> LatencyStats:
    buckets = bucket_delta(now.latency, base.latency) if span else now.latency
    return LatencyStats(
        method="Recommend", calls=int(buckets[-1][1]) if buckets else 0,
        p50_ms=ms(quantile(0.5, buckets)), p99_ms=ms(quantile(0.99, buckets)),
        over_window=bool(span),
    )  # fmt: skip


def answer_stats(now: Sample, base: Sample, span: float, agents: list[AgentStatus]) -> AnswerStats:
    cloud = sum(a.cloud_answers for a in agents if a.reachable)
    local = sum(a.local_answers for a in agents if a.reachable)
    d_cloud, d_local = answer_delta(now, base) if span else (0, 0)
    return AnswerStats(
        cloud=cloud, local=local, cloud_share=share(cloud, cloud + local),
        window_cloud_share=share(d_cloud, d_cloud + d_local), agents=agents,
    )  # fmt: skip


def history_point(old: Sample, new: Sample, now: float) -> HistoryPoint:
    span = new.t - old.t
    buckets = bucket_delta(new.latency, old.latency)
    d_cloud, d_local = answer_delta(new, old)
    calls = sum(new.requests.get(("Recommend", ok), 0.0) for ok in (True, False))
    calls0 = sum(old.requests.get(("Recommend", ok), 0.0) for ok in (True, False))
    return HistoryPoint(
        age_s=now - new.t, recommend_per_s=(calls - calls0) / span,
        allowed_per_s=(new.budget.get("allowed", 0.0) - old.budget.get("allowed", 0.0)) / span,
        rejected_per_s=(new.budget.get("rejected", 0.0) - old.budget.get("rejected", 0.0)) / span,
        p50_ms=ms(quantile(0.5, buckets)), p99_ms=ms(quantile(0.99, buckets)),
        cloud_share=share(d_cloud, d_cloud + d_local),
    )  # fmt: skip


def agent_from_status(url: str, status: dict[str, Any]) -> AgentStatus:
    served = dict(status.get("served", {}))  # the agent's own count of answers by source
    rate = status.get("request_rate")
    return AgentStatus(
        url=url, reachable=True, devices=int(status.get("devices", 0)),
        cloud_answers=int(served.get("cloud", 0)), local_answers=int(served.get("local", 0)),
        request_rate=None if rate is None else float(rate),
    )  # fmt: skip


async def poll_agent(client: httpx.AsyncClient, url: str, deadline_s: float) -> AgentStatus:
    try:
        reply = await asyncio.wait_for(client.get(f"{url.rstrip('/')}/v1/status"), deadline_s)
    except (httpx.HTTPError, TimeoutError) as exc:
        reason = "timeout" if isinstance(exc, TimeoutError | httpx.TimeoutException) else "refused"
        return AgentStatus(url=url, reachable=False, error=f"agent unreachable ({reason})")
    if reply.status_code != 200:
        error = f"agent unreachable (HTTP {reply.status_code})"
        return AgentStatus(url=url, reachable=False, error=error)
    try:
        return agent_from_status(url, reply.json())
    except (ValueError, TypeError, AttributeError):
        return AgentStatus(url=url, reachable=False, error="agent unreachable (unreadable status)")


async def poll_agents(urls: Sequence[str], deadline_s: float) -> list[AgentStatus]:
    if not urls:
        return []
    async with httpx.AsyncClient(timeout=deadline_s, trust_env=False) as client:
        return list(await asyncio.gather(*(poll_agent(client, u, deadline_s) for u in urls)))


def dashboard_router(settings: CloudSettings) -> APIRouter:
    router = APIRouter()
    dash = settings.dashboard
    ring = SampleRing(RING_SIZE, MIN_SPACING_S)
    page = resources.files("cloud_service.api").joinpath("static/dashboard.html").read_text("utf-8")

    @router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.get("/v1/dashboard/stats", response_model=DashboardStats)
    async def dashboard_stats() -> DashboardStats:
        agents = await poll_agents(dash.agents, dash.agent_timeout_s)
        counts = {
            a.url: AgentCounts(a.cloud_answers, a.local_answers) for a in agents if a.reachable
        }
        now = read_metrics(time.monotonic(), counts)
        base = ring.baseline(now.t, dash.window_s) or now
        ring.add(now)
        if now.t - base.t < MIN_SPACING_S:
            base = now  # too short to be a rate: report totals only
        span = now.t - base.t
        return DashboardStats(
            generated_at=time.time(), window_s=span,
            requests=request_stats(now, base, span),
            budget=budget_stats(now, base, span, settings.budget),
            latency=latency_stats(now, base, span), answers=answer_stats(now, base, span, agents),
            history=[history_point(a, b, now.t) for a, b in ring.pairs(HISTORY_POINTS)],
        )  # fmt: skip

    return router
