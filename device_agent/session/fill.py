"""Top a page the pool could not fill up to k: the fleet's latest list, popular items, repeats."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from device_agent.popular import PopularItems
from device_agent.session.state import DeviceSession, Pool

# how a page was filled: the worst source it needed, in this order ("short": fewer than k items
# even after every source, only when the agent knows too few items)
Fill = Literal["pool", "fleet_list", "popular", "repeat", "short"]
TOP_UPS: tuple[Fill, ...] = ("fleet_list", "popular", "repeat")


def top_up(
    s: DeviceSession, page: Pool, k: int, fleet: Pool, popular: PopularItems
) -> tuple[Pool, Fill]:
    """`page` (just taken from the pool, in the re-ranker's order) with items after it, source by
    source: the fleet's latest cloud list and the popular items, both without anything this
    device was shown, then (last resort) its shown items, least recently shown first. The added
    items are served like the pool's (on the page, shown)."""
    extra: list[tuple[int, int]] = []
    fill: Fill = "pool"
    for source in TOP_UPS:
        need = k - len(page) - len(extra)
        if need <= 0:
            break
        fresh = first_new(candidates(source, s, fleet, popular, need), need, s)
        if fresh:
            s.show(fresh)
            extra.extend(fresh)
            fill = source
    if len(page) + len(extra) < k:
        fill = "short"
    return (page.topped_up(extra) if extra else page), fill


def candidates(
    source: Fill, s: DeviceSession, fleet: Pool, popular: PopularItems, need: int
) -> Iterable[tuple[int, int]]:
    """(item, category) pairs of one source, best first."""
    if source == "fleet_list":
        pairs = zip(fleet.items.tolist(), fleet.categories.tolist(), strict=True)
        return ((i, c) for i, c in pairs if i not in s.shown)
    if source == "popular":
        return popular.top(need, s.shown)
    return s.repeats()


def first_new(pairs: Iterable[tuple[int, int]], n: int, s: DeviceSession) -> list[tuple[int, int]]:
    """The first `n` pairs whose item is not on the page yet (nor twice in the answer)."""
    seen = {item for item, _ in s.page}
    out: list[tuple[int, int]] = []
    for item, category in pairs:
        if len(out) == n:
            break
        if item not in seen:
            seen.add(item)
            out.append((item, category))
    return out
