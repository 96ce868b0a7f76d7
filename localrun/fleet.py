"""A simulated fleet: world users scroll feeds through device agents' REST API, in threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np

from localrun.app_tokens import AppTokens
from localrun.run_secrets import APP_SECRET
from protos.actions import NAMES, code_of
from simulator.session import maybe_switch, show_page, start_session
from simulator.world import World


@dataclass
class FleetReport:
    """What the app side saw; every figure comes from the world's ground truth or the clients."""

    sessions: int = 0
    steps: int = 0
    items: int = 0
    clicks: int = 0
    purchases: int = 0
    expected_reward: float = 0.0
    switches: int = 0
    served_by: dict[str, int] = field(default_factory=lambda: {"cloud": 0, "local": 0})
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: int = 0  # app requests that got no answer (status != 200 or a network error)
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_step(self, body: dict, latency_ms: float) -> None:
        with self.lock:
            self.steps += 1
            self.served_by[body["source"]] += 1
            outcome = body["decision"]["outcome"]
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            self.latencies_ms.append(latency_ms)

    @property
    def paced_requests(self) -> int:
        """Cloud requests that count against the budget (refills and value-driven refreshes,
        failed or not); a session's first list is not a request."""
        return sum(n for o, n in self.outcomes.items() if o not in ("initial", "kept"))

    @property
    def request_rate(self) -> float:
        return self.paced_requests / self.steps if self.steps else 0.0


def session_plan(world: World, seed: int) -> Iterator[tuple[int, int, int]]:
    """Endless (user, session seed, steps): users uniform, lengths as in the world."""
    rng = np.random.default_rng([seed, 99])
    cfg = world.cfg
    while True:
        steps = int(np.clip(rng.geometric(1.0 / 12.0), 2, cfg.max_session_steps))
        yield int(rng.integers(cfg.n_users)), int(rng.integers(2**62)), steps


def run_session(
    client: httpx.Client, world: World, user: int, seed: int, steps: int, device: str,
    report: FleetReport,
) -> None:  # fmt: skip
    state = start_session(world, user, seed)
    ts = int(time.time() * 1000)
    for _ in range(steps):
        report.switches += int(maybe_switch(world, state))
        start = time.perf_counter()
        try:
            reply = client.post(
                "/v1/recommend", json={"device_id": device, "k": world.cfg.page_size}
            )
        except httpx.HTTPError:
            report.failures += 1
            continue
        latency = (time.perf_counter() - start) * 1000
        if reply.status_code != 200:
            report.failures += 1
            continue
        body = reply.json()
        report.add_step(body, latency)
        page = np.array([it["item_id"] for it in body["items"]], dtype=np.int64)
        if len(page) == 0:
            state.step += 1
            continue
        clicks, buys, expected = show_page(world, state, page)
        state.step += 1
        events = [
            {"item_id": int(i), "timestamp_ms": ts + state.step,
             "action": NAMES[code_of(c, b)]}
            for i, c, b in zip(page.tolist(), clicks.tolist(), buys.tolist(), strict=True)
        ]  # fmt: skip
        client.post("/v1/events", json={"device_id": device, "events": events})
        with report.lock:
            report.items += len(page)
            report.clicks += int(clicks.sum())
            report.purchases += int(buys.sum())
            report.expected_reward += expected
    with report.lock:
        report.sessions += 1


def run_fleet(
    world: World, agent_urls: list[str], sessions: int, max_seconds: float, users: int,
    seed: int, tag: str, timeout_s: float = 2.0, report: FleetReport | None = None,
) -> FleetReport:  # fmt: skip
    """The first `sessions` sessions of the plan (the same ones for every policy compared),
    played by `users` concurrent app users, each session a new device id; stops taking new
    sessions after `max_seconds`. `report` (filled as it runs) lets a caller watch it."""
    report = report if report is not None else FleetReport()
    plan = iter([s for s, _ in zip(session_plan(world, seed), range(sessions), strict=False)])
    plan_lock = threading.Lock()
    counter = iter(range(10**9))
    deadline = time.monotonic() + max_seconds

    tokens = AppTokens(APP_SECRET)  # the agents topology started hold this app key

    def user_loop(u: int) -> None:
        url = agent_urls[u % len(agent_urls)]
        with httpx.Client(base_url=url, timeout=timeout_s, auth=tokens) as client:
            while time.monotonic() < deadline:
                with plan_lock:
                    planned = next(plan, None)
                    n = next(counter)
                if planned is None:
                    return
                user, session_seed, steps = planned
                run_session(client, world, user, session_seed, steps, f"{tag}-{n}", report)

    threads = [threading.Thread(target=user_loop, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return report
