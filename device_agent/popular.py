"""Fleet-wide item popularity: the agent's fallback once the cloud lists it saw are used up."""

from __future__ import annotations

import heapq
import threading
from collections.abc import Container, Iterable

from protos.actions import Action

CAPACITY = 1000  # items kept after a prune (the table holds at most twice as many)
LIST_WEIGHT = 1.0  # an item on any device's cloud list
ACTION_WEIGHTS = {Action.EXPOSURE: 0.0, Action.CLICK: 3.0, Action.PURCHASE: 10.0}


class PopularItems:
    """Scores of items over every device's cloud lists and app clicks/purchases, with each
    item's category. Memory bounded: past 2 × `capacity` items the table keeps its top
    `capacity` and halves their scores (old popularity fades, new items can enter). Thread-safe.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._scores: dict[int, float] = {}
        self._categories: dict[int, int] = {}
        self._lock = threading.Lock()

    def note_list(self, items: Iterable[int], categories: Iterable[int]) -> None:
        """A cloud list served to some device."""
        with self._lock:
            for item, category in zip(items, categories, strict=True):
                self._add(item, LIST_WEIGHT, category)
            self._prune()

    def note_event(self, item: int, action: int, category: int | None) -> None:
        """An app event; an item whose category the agent does not know is not counted."""
        weight = ACTION_WEIGHTS.get(Action(action), 0.0)
        if weight == 0.0:
            return
        with self._lock:
            if category is None and item not in self._categories:
                return
            self._add(item, weight, category)
            self._prune()

    def top(self, n: int, exclude: Container[int]) -> list[tuple[int, int]]:
        """The `n` most popular (item, category) pairs not in `exclude`, most popular first."""
        with self._lock:
            ranked = heapq.nlargest(
                n, (i for i in self._scores if i not in exclude), key=self._scores.__getitem__
            )
            return [(i, self._categories[i]) for i in ranked]

    def score(self, item: int) -> float:
        with self._lock:
            return self._scores.get(item, 0.0)

    def __len__(self) -> int:
        return len(self._scores)

    def _add(self, item: int, weight: float, category: int | None) -> None:
        self._scores[item] = self._scores.get(item, 0.0) + weight
        if category is not None:
            self._categories[item] = category

    def _prune(self) -> None:
        if len(self._scores) <= 2 * self.capacity:
            return
        kept = heapq.nlargest(self.capacity, self._scores.items(), key=lambda kv: kv[1])
        self._scores = {item: score / 2 for item, score in kept}
        self._categories = {item: self._categories[item] for item in self._scores}
