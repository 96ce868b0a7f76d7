"""Prometheus metrics of the device agent (no device or item ids as labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SERVED = Counter("tandem_agent_recommend_total", "App recommend calls by source", ["source"])
CLOUD_CALLS = Counter(
    "tandem_agent_cloud_calls_total", "Cloud Recommend calls by outcome", ["outcome"]
)
PAGE_FILL = Counter(
    "tandem_agent_page_fill_total",
    "App pages by the worst source that filled them: pool, fleet_list (the fleet's latest cloud "
    "list), popular, repeat (items shown before), short (fewer than k items)",
    ["fill"],
)
EVENTS = Counter("tandem_agent_events_total", "App events accepted", ["action"])
MODEL_UPDATES = Counter(
    "tandem_agent_model_updates_total",
    "Model fetches by kind and outcome (installed / refused / unreachable)",
    ["kind", "outcome"],
)
LATENCY = Histogram(
    "tandem_agent_recommend_seconds", "App recommend latency by source", ["source"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.5, 1.0),
)  # fmt: skip
FORWARDED = Counter(
    "tandem_agent_forwarded_events_total",
    "App events forwarded to the cloud's ReportEvents, by result (sent / dropped / refused)",
    ["result"],
)
FORWARD_CALLS = Counter(
    "tandem_agent_report_events_calls_total", "ReportEvents calls by outcome", ["outcome"]
)
FORWARD_QUEUE = Gauge("tandem_agent_forward_queue_events", "App events queued for the cloud")
HANDSHAKE_MISMATCH = Counter(
    "tandem_agent_handshake_mismatch_total",
    "Steps served in the cloud order: the pool's embedding version is not the re-ranker's",
)
MODEL_FAILURES = Counter(
    "tandem_agent_model_failures_total",
    "Decisions whose model raised and fell back (value model → shift; detector → formula)",
    ["kind"],
)
PRIVATE_REQUESTS = Counter(
    "tandem_agent_private_requests_total",
    "Private Recommend requests by what they carried: encoder (its pseudo-history), the mean "
    "row instead (no_encoder / embedding_mismatch / encoder_failed), or no_clicks (nothing)",
    ["carried"],
)
