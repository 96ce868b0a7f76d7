"""App users against the device agents' REST API: world sessions, one device id per user.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8100 AppUser

TANDEM_AGENT_URLS (comma separated) spreads users over several agents (else --host);
TANDEM_WORLD_SCALE / TANDEM_WORLD_SEED must name the world the cloud's models were trained on
("script" for the world-free scripted feed); TANDEM_PAGE_SIZE is the app's page (k);
TANDEM_THINK_S the pause between feed steps; TANDEM_DEVICE_PREFIX names this run's devices;
TANDEM_APP_SECRET is the agents' DEVICE_APP_SECRET (each user signs as its device; no default).
"""

from __future__ import annotations

import functools
import itertools
import os
import uuid
from typing import Any

from locust import FastHttpUser, between, task

from loadtest import locust_final  # noqa: F401  (final stats CSV at exit)
from loadtest.feed import Event, Feed, feed_for
from localrun.app_tokens import AppTokens

PAGE_SIZE = int(os.environ.get("TANDEM_PAGE_SIZE", "4"))
THINK_S = float(os.environ.get("TANDEM_THINK_S", "0.1"))
PREFIX = os.environ.get("TANDEM_DEVICE_PREFIX", "locust")
AGENT_URLS = [u.strip() for u in os.environ.get("TANDEM_AGENT_URLS", "").split(",") if u.strip()]
_USER_NUMBERS = itertools.count()


@functools.cache
def app_tokens() -> AppTokens:
    """Each user's token for its device under the agents' app key (TANDEM_APP_SECRET)."""
    return AppTokens(os.environ["TANDEM_APP_SECRET"])


class AppUser(FastHttpUser):
    """A phone's app: every feed step reports the last page's events, then asks for a page."""

    wait_time = between(0.5 * THINK_S, 1.5 * THINK_S)
    device_id: str
    agent: str
    feed: Feed
    pending: list[Event]
    headers: dict[str, str]

    def on_start(self) -> None:
        n = next(_USER_NUMBERS)
        self.device_id = f"{PREFIX}-{n}-{uuid.uuid4().hex[:8]}"
        self.agent = AGENT_URLS[n % len(AGENT_URLS)] if AGENT_URLS else (self.host or "")
        self.feed = feed_for(self.device_id)
        self.pending = []
        self.headers = app_tokens().header(self.device_id)

    @task(12)
    def scroll(self) -> None:
        """One feed step (mean session length 12 steps, as in the world, with `reopen`)."""
        self.feed.begin_step()
        self.report_events()
        items = self.recommend()
        if items is not None:
            self.pending = self.feed.react(items)

    @task(1)
    def reopen(self) -> None:
        """The app is closed and opened again: a new session with a fresh intent, same device."""
        self.report_events()
        self.feed.new_session()

    def report_events(self) -> None:
        if not self.pending:
            return
        body = {"device_id": self.device_id, "events": self.pending}
        self.pending = []
        with self.client.post(
            f"{self.agent}/v1/events",
            json=body,
            name="/v1/events",
            catch_response=True,
            headers=self.headers,
        ) as reply:
            if reply.status_code != 200 or reply.json().get("accepted") != len(body["events"]):
                reply.failure(f"events: {reply.status_code} {reply.text[:200]}")

    def recommend(self) -> list[dict[str, Any]] | None:
        body = {"device_id": self.device_id, "k": PAGE_SIZE}
        with self.client.post(
            f"{self.agent}/v1/recommend",
            json=body,
            name="/v1/recommend",
            catch_response=True,
            headers=self.headers,
        ) as reply:
            if reply.status_code != 200:
                reply.failure(f"recommend: {reply.status_code} {reply.text[:200]}")
                return None
            answer = reply.json()
            items: list[dict[str, Any]] = answer["items"]
            if len(items) < PAGE_SIZE:  # the agent tops pages up: a short one is a failure
                reply.failure(
                    f"short page: {len(items)}/{PAGE_SIZE} items (fill={answer.get('fill')})"
                )
            return items or None  # the app still shows what it got
