"""A device's own training impressions, built from its app events; they never leave the device."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from device_agent.session.registry import DeviceRegistry
from protos.actions import Action

PAD = -1
RECENT = 64  # a click labels a showing of its item among the latest RECENT impressions


@dataclass
class Impression:
    history: tuple[int, ...]  # the clicks before it, oldest first
    item: int
    position: int  # slot on the page it was shown in (position bias is trained, not served)
    click: bool = False
    purchase: bool = False


@dataclass
class LocalExamples:
    """One device's bounded log of impressions, labelled by the clicks and purchases that follow.

    The same example the cloud's ranker is trained on (an exposure, the click history before it,
    its position, click and purchase labels), so the device trains the ranker's own loss.
    """

    history_len: int
    capacity: int = 2000
    impressions: deque[Impression] = field(init=False)
    clicks: deque[int] = field(init=False)
    categories: dict[int, int] = field(default_factory=dict)  # item → category, from cloud lists
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.impressions = deque(maxlen=self.capacity)
        self.clicks = deque(maxlen=self.history_len)

    def note_list(self, items: np.ndarray, categories: np.ndarray) -> None:
        """A cloud list arrived: its items become known (categories) and join the decoy pool."""
        with self.lock:
            self.categories.update(zip(items.tolist(), categories.tolist(), strict=True))

    def decoy_pool(self) -> np.ndarray:
        """The items the cloud has sent this device: it knows them already, so they can pad."""
        with self.lock:
            return np.array(sorted(self.categories), dtype=np.int64)

    def record(self, item: int, action: int, position: int) -> None:
        with self.lock:
            if action == Action.EXPOSURE:
                self.impressions.append(Impression(tuple(self.clicks), item, position))
                return
            imp = self._latest_showing(item)
            if imp is None:  # the app reported the click without its exposure: it was shown
                imp = Impression(tuple(self.clicks), item, position)
                self.impressions.append(imp)
            imp.click = True
            imp.purchase = imp.purchase or action == Action.PURCHASE
            if action == Action.CLICK:
                self.clicks.append(item)

    def _latest_showing(self, item: int) -> Impression | None:
        for back, imp in enumerate(reversed(self.impressions)):
            if back >= RECENT:
                return None
            if imp.item == item:
                return imp
        return None

    def __len__(self) -> int:
        return len(self.impressions)

    def arrays(self) -> dict[str, np.ndarray]:
        """history (n, L) padded on the left with PAD, item, position, click, purchase."""
        with self.lock:
            imps = list(self.impressions)
        hist = np.full((len(imps), self.history_len), PAD, dtype=np.int64)
        for r, imp in enumerate(imps):
            if imp.history:
                hist[r, -len(imp.history) :] = imp.history
        return {
            "history": hist,
            "item": np.array([i.item for i in imps], dtype=np.int64),
            "position": np.array([i.position for i in imps], dtype=np.int64),
            "click": np.array([i.click for i in imps], dtype=np.float32),
            "purchase": np.array([i.purchase for i in imps], dtype=np.float32),
        }

    def true_ids(self) -> np.ndarray:
        """Every item the device's training touches: shown items and clicked history."""
        a = self.arrays()
        return np.unique(np.concatenate([a["item"], a["history"][a["history"] >= 0]]))

    def category_of(self, ids: np.ndarray) -> np.ndarray:
        with self.lock:
            return np.array([self.categories.get(int(i), 0) for i in ids], dtype=np.int64)


ExampleStore = DeviceRegistry[LocalExamples]


def example_store(history_len: int, capacity: int, max_devices: int) -> ExampleStore:
    """Every simulated device's examples in one agent, least recently used evicted."""
    return DeviceRegistry(lambda _device: LocalExamples(history_len, capacity), max_devices)
