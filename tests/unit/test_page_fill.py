"""Pages the pool cannot fill: topped up from the fleet's list, popular items, then repeats."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY

from device_agent.api.app import page_to_body
from device_agent.inference.models import RerankerSlot
from device_agent.popular import PopularItems
from device_agent.ports import CloudError
from device_agent.service import AgentService, AppEvent, Page
from protos.actions import Action
from tests.unit.test_agent_service import FakeCloud, service

pytestmark = pytest.mark.unit
DEAD = CloudError("timeout", "deadline exceeded")


def ids(page: Page) -> list[int]:
    return page.items.items.tolist()


def agent_with_lists(devices: int) -> tuple[AgentService, FakeCloud]:
    """One cloud list (12 items) per device "d0", "d1", ..., then a dead cloud."""
    cloud = FakeCloud()
    agent = service(cloud, request_budget=0.0, initial_threshold=1e9)
    for n in range(devices):
        agent.recommend(f"d{n}", 4)
    cloud.error = DEAD
    return agent, cloud


def short_pages() -> float:
    return REGISTRY.get_sample_value("tandem_agent_page_fill_total", {"fill": "short"}) or 0.0


def test_a_device_the_dead_cloud_never_answered_gets_the_fleets_list() -> None:
    agent, _ = agent_with_lists(1)  # d0 got items 0..11
    pages = [agent.recommend("new", 4) for _ in range(4)]
    # one free first ask; then the fleet's list is its pool, and its next ask a counted refill
    assert [p.decision.outcome for p in pages] == ["timeout", "kept", "kept", "timeout"]
    assert [p.fill for p in pages] == ["pool", "pool", "pool", "repeat"]  # it knows 12 items
    assert [ids(p) for p in pages[:3]] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert len(pages[3].items) == 4


def test_an_exhausted_pool_is_topped_up_after_its_own_items() -> None:
    agent, _ = agent_with_lists(2)  # d0: 0..11, d1: 12..23 (the fleet's latest list)
    pages = [agent.recommend("d0", 5) for _ in range(2)]  # 4 + 5 shown: 3 left in the pool
    assert [p.fill for p in pages] == ["pool", "fleet_list"]
    assert ids(pages[-1]) == [9, 10, 11, 12, 13]  # the pool's items first, then the fleet's
    more = [agent.recommend("d0", 4) for _ in range(20)]
    assert all(len(p.items) == 4 for p in more)
    assert agent.status()["short_pages"] == 0


def test_the_pools_items_keep_the_re_rankers_order() -> None:
    class Reverse:
        """A re-ranker that scores the pool against the cloud's order."""

        embedding_version, version = "", "reverse"

        def score(self, *inputs: np.ndarray) -> np.ndarray:
            return -inputs[3]

    cloud = FakeCloud()
    slot = RerankerSlot()
    slot.current = Reverse()  # type: ignore[assignment]
    agent = service(cloud, slot, request_budget=0.0, initial_threshold=1e9)
    agent.recommend("d0", 10)  # d0: 0..11, 2 left in the pool
    agent.recommend("d1", 4)  # d1: 12..23, the fleet's latest list
    agent.record_events("d0", [AppEvent(0, Action.CLICK, 1)])  # the re-ranker has behaviour
    cloud.error = DEAD
    page = agent.recommend("d0", 5)
    assert page.fill == "fleet_list" and ids(page) == [11, 10, 12, 13, 14]


def test_popular_items_follow_once_the_fleets_list_is_used_up() -> None:
    agent, _ = agent_with_lists(3)  # d0: 0..11, d1: 12..23, d2: 24..35 (the fleet's list)
    agent.record_events("d0", [AppEvent(3, Action.PURCHASE, 1), AppEvent(2, Action.CLICK, 2)])
    pages = [agent.recommend("new", 5) for _ in range(3)]
    assert [p.fill for p in pages] == ["pool", "pool", "popular"]  # the fleet's list as its pool
    assert ids(pages[-1]) == [34, 35, 3, 2, 0]  # bought, clicked, then by cloud lists


def test_items_are_repeated_only_when_nothing_else_is_left() -> None:
    cloud = FakeCloud()
    agent = service(cloud, request_budget=0.0, initial_threshold=1e9)
    pages = [agent.recommend("d0", 4)]  # the agent knows 12 items
    cloud.error = DEAD
    pages += [agent.recommend("d0", 4) for _ in range(4)]
    assert [p.fill for p in pages] == ["pool", "pool", "pool", "repeat", "repeat"]
    first = [item for p in pages[:3] for item in ids(p)]
    assert sorted(first) == list(range(12))  # every item once before any repeat
    assert ids(pages[3]) == ids(pages[0]) and ids(pages[4]) == ids(pages[1])  # oldest first


def test_a_fresh_agent_with_a_dead_cloud_counts_its_short_page() -> None:
    cloud = FakeCloud()
    cloud.error = DEAD
    agent = service(cloud)
    before = short_pages()
    page = agent.recommend("d0", 4)
    assert len(page.items) == 0 and page.fill == "short"
    assert agent.status()["short_pages"] == 1 and short_pages() == before + 1
    cloud.error = None
    assert agent.recommend("d1", 4).fill == "pool" and agent.status()["short_pages"] == 1


def test_the_rest_answer_says_how_the_page_was_filled() -> None:
    agent, _ = agent_with_lists(2)  # d0: 0..11, d1: 12..23 (the fleet's latest list)
    agent.recommend("d0", 5)  # 3 left of its own list
    body = page_to_body(agent.recommend("d0", 5)).model_dump()
    assert body["fill"] == "fleet_list" and body["source"] == "local"
    assert [it["item_id"] for it in body["items"]] == [9, 10, 11, 12, 13]


def test_the_popular_table_stays_bounded_and_keeps_the_most_popular() -> None:
    table = PopularItems(capacity=10)
    table.note_event(999, Action.CLICK, category=None)  # unknown category: not counted
    assert len(table) == 0
    table.note_list(range(100), [i % 5 for i in range(100)])
    table.note_event(7, Action.PURCHASE, category=None)  # known from the list
    assert len(table) <= 20
    assert table.top(2, exclude={99}) == [(7, 2), (0, 0)]


def test_one_app_cannot_push_an_item_up_the_fleets_popular_list() -> None:
    agent, _ = agent_with_lists(1)  # d0 was served items 0..3
    assert agent.popular.score(3) == agent.popular.score(11) == 1.0  # one cloud list each
    repeated = [AppEvent(3, Action.PURCHASE, t) for t in range(200)]
    off_page = [AppEvent(11, Action.PURCHASE, t) for t in range(200)]  # known, not on its page
    agent.record_events("d0", repeated + off_page)
    agent.record_events("d0", repeated)  # another batch for the same page
    assert agent.popular.score(3) == 1.0 + 10.0  # one purchase of it on this page
    assert agent.popular.score(11) == 1.0


def test_a_warmed_up_agent_fills_its_first_pages_with_the_cloud_down() -> None:
    cloud = FakeCloud()
    cloud.error = DEAD
    cold = service(cloud)
    assert not cold.warm_up("warmup-a")  # a dead cloud: nothing to warm up with
    cloud.error = None
    agent = service(cloud)
    assert agent.warm_up("warmup-a") and agent.sessions.snapshot() == []  # no session made
    cloud.error = DEAD
    page = agent.recommend("d0", 4)
    assert len(page.items) == 4 and page.decision.outcome == "timeout"
    assert agent.status()["short_pages"] == 0
