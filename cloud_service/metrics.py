"""Prometheus metrics of the cloud service (labels are bounded: never device or item ids)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "tandem_cloud_requests_total", "Calls by method, transport and outcome",
    ["method", "transport", "code"],
)  # fmt: skip
LATENCY = Histogram(
    "tandem_cloud_request_seconds", "Call latency by method and transport",
    ["method", "transport"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56),
)  # fmt: skip
BUDGET = Counter(
    "tandem_cloud_budget_decisions_total", "Recommend calls by budget decision", ["decision"]
)
DEGRADED = Counter(
    "tandem_cloud_degraded_total", "Recommend calls answered without the session store"
)
REDIS_UP = Gauge("tandem_cloud_redis_up", "1 when the last Redis check succeeded")
EVENTS = Counter("tandem_cloud_events_total", "Events appended to the stream")
EVENT_BATCHES = Counter(
    "tandem_cloud_event_batches_total", "Event batches by result (stored / duplicate)", ["result"]
)
MODEL_LOADS = Counter(
    "tandem_cloud_model_loads_total",
    "Model versions loaded, by kind and outcome (installed / refused)",
    ["kind", "outcome"],
)
