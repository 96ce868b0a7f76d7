"""What the smoke asks of a running stack: readiness, an app's page and events, the load."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtest.report import read_stats
from localrun.app_tokens import AppTokens

PAGE = 4


def ready(url: str, client: httpx.Client) -> bool:
    try:
        return client.get(f"{url}/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def app_round_trip(agent: str, client: httpx.Client, app_secret: str) -> dict[str, object]:
    """A page, a click on its first item, another page: both full, the event accepted; no
    token, another device's token and a malformed id refused."""
    device = "smoke-app-0"
    headers = AppTokens(app_secret).header(device)
    body = {"device_id": device, "k": PAGE}
    for name, wrong in (("no token", {}), ("another device's token", _other(app_secret))):
        refused = client.post(f"{agent}/v1/recommend", json=body, headers=wrong)
        if refused.status_code != 401:
            raise AssertionError(f"{name} got {refused.status_code}, not 401: {refused.text}")
    first = client.post(f"{agent}/v1/recommend", json={"device_id": device, "k": PAGE},
                        headers=headers)  # fmt: skip
    first.raise_for_status()
    items = first.json()["items"]
    if len(items) != PAGE:
        raise AssertionError(f"first page has {len(items)} items, not {PAGE}: {first.text}")
    event = {"item_id": items[0]["item_id"], "action": "click", "timestamp_ms": 1}
    sent = client.post(f"{agent}/v1/events", json={"device_id": device, "events": [event]},
                       headers=headers)  # fmt: skip
    sent.raise_for_status()
    if sent.json().get("accepted") != 1:
        raise AssertionError(f"the event was not accepted: {sent.text}")
    second = client.post(f"{agent}/v1/recommend", json={"device_id": device, "k": PAGE},
                         headers=headers)  # fmt: skip
    second.raise_for_status()
    if len(second.json()["items"]) != PAGE:
        raise AssertionError(f"second page is short: {second.text}")
    refused = client.post(f"{agent}/v1/recommend", json={"device_id": "abc}", "k": PAGE},
                          headers=AppTokens(app_secret).header("abc}"))  # fmt: skip
    if refused.status_code != 422:
        raise AssertionError(f"a malformed device id got {refused.status_code}")
    return {"first_source": first.json()["source"], "second_source": second.json()["source"]}


def _other(app_secret: str) -> dict[str, str]:
    return AppTokens(app_secret).header("smoke-app-1")


@dataclass(frozen=True)
class LoadResult:
    requests: int
    failures: int
    rps: float
    recommend_p50_ms: float
    recommend_p99_ms: float
    failure_kinds: dict[str, int]


def load_result(results: Path) -> LoadResult:
    stats = read_stats(results / "agents_stats.csv")
    total, page = stats["Aggregated"], stats["/v1/recommend"]
    return LoadResult(total.requests, total.failures, total.rps, page.p50, page.p99,
                      failure_kinds(results / "agents_failures.csv"))  # fmt: skip


def failure_kinds(path: Path) -> dict[str, int]:
    """locust's failures CSV: each distinct error (truncated) and how often it occurred."""
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {f"{r['Name']}: {r['Error'][:160]}": int(r["Occurrences"]) for r in rows}


def request_rate(agents: list[str], client: httpx.Client) -> float:
    """Cloud requests the agents counted against the budget, per feed step (all agents)."""
    steps = requests = 0
    for url in agents:
        status = client.get(f"{url}/v1/status").json()
        steps += int(status["steps"])
        requests += int(status["cloud_requests"])
    return requests / max(steps, 1)
