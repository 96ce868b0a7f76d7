"""The fleet's decisions logs as per-decision rows for learning the request policy (uplift).

`decision_rows(sorted(Path("logs").glob("decisions-*.csv")), horizon=3)` reads the files
`training.event_logs` writes. Every event of an item on a device's page carries that page's
decision and the session's page counter `step`; a page is one (device, step). Each page with
features becomes one row: its features `x`, whether it asked the cloud (`w`), the propensity
of that action (`p`), the reward over the pages step … step+H−1 of the same device (`y`: a
click counts 1, a purchase 1 + 3, an exposure 0) and the pages until the device next asked the
cloud (`dwell`). A page whose horizon runs past the device's last logged page is dropped (the
count is in `dropped`): its reward would be cut short. A page with no logged event in between
counts as a page without reward that did not ask. A decision of the agent's own rules rather
than the policy's (asked with propensity 1: the initial list, a refill of an empty pool) is kept,
marked `forced`, for the learner to drop.

The consumer writes at least once (a crash re-writes its pending entries), so rows are deduped
by `entry_id`, and they are taken in stream order (the entry id), whatever the files' order.
The cloud stores a batch id once, so the stream has no retried duplicates. A device whose
session restarted reuses its steps; its pages then merge (not detected here).
"""

from __future__ import annotations

import bisect
import csv
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The world's reward, clicks + 3 × purchases, per event: an app reports one event per impression
# with the furthest step of the funnel it reached (protos.actions.code_of), so a purchase was
# also a click (1 + 3). An exposure earns nothing.
REWARD = {"click": 1.0, "purchase": 4.0}


@dataclass(frozen=True)
class DecisionRows:
    """One row per logged decision (device, step) with features, in (device, step) order."""

    x: np.ndarray  # (n, d) float32: the request-value features the decision was made on
    w: np.ndarray  # (n,) bool: the page asked the cloud
    p: np.ndarray  # (n,) float64: propensity of the action taken
    forced: np.ndarray  # (n,) bool: asked with propensity 1, not the policy's choice
    failed: np.ndarray  # (n,) bool: asked, but the page was not a fresh cloud list (timeout, 429)
    y: np.ndarray  # (n,) float64: clicks + 3 × purchases over pages step … step+H−1
    dwell: np.ndarray  # (n,) int64: pages until the device's next asked page
    censored: np.ndarray  # (n,) bool: no later asked page in the log; dwell is a lower bound
    device: np.ndarray  # (n,) str
    step: np.ndarray  # (n,) int64
    horizon: int
    dropped: int  # pages whose horizon ran past their device's log, or of a minority feature width

    def __len__(self) -> int:
        return int(self.w.shape[0])


@dataclass
class _Page:
    asked: bool
    propensity: float
    features: str  # as logged: space-separated, "" when none
    served_cloud: bool = False  # the page showed a fresh cloud list (an ask that worked)
    rewards: dict[str, float] = field(default_factory=dict)  # item -> its furthest action's

    @property
    def reward(self) -> float:
        return sum(self.rewards.values())


# an event that belongs to a page: (device, step, action, asked, propensity, features)
_Event = tuple[str, int, str, bool, float, str, str, str]  # ..., item, source


def decision_rows(paths: Iterable[str | Path], horizon: int = 3) -> DecisionRows:
    """The decisions of the logs at `paths`, each with its reward over `horizon` pages."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    devices = _pages(_read(paths))
    keys = ("x", "w", "failed", "p", "y", "dwell", "censored", "dev", "s")
    cols: dict[str, list] = {k: [] for k in keys}
    dropped = 0
    for device in sorted(devices):
        pages = devices[device]
        last = max(pages)
        asked = sorted(s for s, page in pages.items() if page.asked)
        for s in sorted(pages):
            page = pages[s]
            if not page.features:
                continue
            if s + horizon - 1 > last:
                dropped += 1
                continue
            nxt = bisect.bisect_right(asked, s)
            cols["x"].append([float(v) for v in page.features.split()])
            cols["w"].append(page.asked)
            cols["failed"].append(page.asked and not page.served_cloud)
            cols["p"].append(page.propensity)
            cols["y"].append(sum(pages[t].reward for t in range(s, s + horizon) if t in pages))
            cols["dwell"].append(asked[nxt] - s if nxt < len(asked) else last + 1 - s)
            cols["censored"].append(nxt == len(asked))
            cols["dev"].append(device)
            cols["s"].append(s)
    return _rows(cols, horizon, dropped)


def _read(paths: Iterable[str | Path]) -> dict[str, _Event]:
    """The events that belong to a page (step > 0), by entry id (a re-written row once)."""
    events: dict[str, _Event] = {}
    for path in paths:
        with Path(path).open(newline="") as f:
            for row in csv.DictReader(f):
                step = int(row.get("step") or 0)  # files of an older consumer have no step
                if step > 0:
                    events[row["entry_id"]] = (
                        row["device"], step, row["action"], row["asked_cloud"] == "1",
                        float(row["propensity"]), row.get("features") or "",
                        row.get("item_id", ""), row.get("source", ""),
                    )  # fmt: skip
    return events


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _pages(events: dict[str, _Event]) -> dict[str, dict[int, _Page]]:
    """Each device's pages: the decision of the page's first event, the reward of its items —
    each item once, at its furthest action (a device repeating events cannot inflate it)."""
    devices: dict[str, dict[int, _Page]] = {}
    for entry_id in sorted(events, key=_entry_order):
        device, step, action, asked, propensity, features, item, source = events[entry_id]
        pages = devices.setdefault(device, {})
        page = pages.get(step)
        if page is None:
            page = pages[step] = _Page(asked, propensity, features)
        page.served_cloud |= source == "cloud"
        page.rewards[item] = max(page.rewards.get(item, 0.0), REWARD.get(action, 0.0))
    return devices


def _rows(cols: dict[str, list], horizon: int, dropped: int) -> DecisionRows:
    """The rows of the most common feature width (an old agent or a hostile device logging
    another width cannot stop training: its rows are counted in `dropped`)."""
    widths = Counter(len(f) for f in cols["x"])
    if len(widths) > 1:
        width = widths.most_common(1)[0][0]
        keep = [len(f) == width for f in cols["x"]]
        dropped += keep.count(False)
        cols = {k: [v for v, ok in zip(vs, keep, strict=True) if ok] for k, vs in cols.items()}
    p = np.asarray(cols["p"], dtype=np.float64)
    w = np.asarray(cols["w"], dtype=bool)
    return DecisionRows(
        x=np.asarray(cols["x"], dtype=np.float32).reshape(len(w), -1 if len(w) else 0),
        w=w, p=p, forced=w & (p >= 1.0), y=np.asarray(cols["y"], dtype=np.float64),
        failed=np.asarray(cols["failed"], dtype=bool),
        dwell=np.asarray(cols["dwell"], dtype=np.int64),
        censored=np.asarray(cols["censored"], dtype=bool),
        device=np.asarray(cols["dev"], dtype=str), step=np.asarray(cols["s"], dtype=np.int64),
        horizon=horizon, dropped=dropped,
    )  # fmt: skip
