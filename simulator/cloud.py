"""The world's stand-in for the cloud recommender: long-term profile plus recent feedback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protos.actions import Action
from simulator.world import World

EXPOSURE, CLICK, PURCHASE = Action.EXPOSURE, Action.CLICK, Action.PURCHASE


@dataclass(frozen=True)
class Feedback:
    """One observed event of a session: what a device can report to the cloud."""

    item: int
    action: int  # EXPOSURE | CLICK | PURCHASE


class ReferenceCloud:
    """Builds a fresh ranked list from what a device reports; the default cloud of the world.

    Category affinity = log long-term interest + a boost for recently clicked categories − a
    penalty for recently skipped ones; items inside a category are drawn from its best items.
    """

    def __init__(
        self,
        world: World,
        recent_window: int = 24,
        click_boost: float = 2.2,
        skip_penalty: float = 0.6,
        per_category: int = 1000,
        temperature: float = 0.7,
        item_temperature: float = 2.0,
        taste_weight: float = 1.5,
    ) -> None:
        self.world = world
        self.recent_window = recent_window
        self.click_boost = click_boost
        self.skip_penalty = skip_penalty
        self.temperature = temperature
        self.item_temperature = item_temperature
        self.taste_weight = taste_weight
        cat = world.catalog
        self.static_score = (cat.quality + 0.5 * cat.pop_z).astype(np.float64)
        self.by_category: list[np.ndarray] = []
        for c in range(world.cfg.n_categories):
            members = np.flatnonzero(cat.category == c)
            order = np.argsort(-self.static_score[members], kind="stable")
            self.by_category.append(members[order[:per_category]])

    def affinity(self, user: int, feedback: Sequence[Feedback]) -> np.ndarray:
        """Log-affinity of the user for every category given the recent feedback."""
        cat = self.world.catalog.category
        a = np.log(self.world.users.interest[user] + 0.005)
        for age, fb in enumerate(reversed(feedback[-self.recent_window :])):
            decay = 0.9**age
            if fb.action >= CLICK:
                a[cat[fb.item]] += self.click_boost * decay
            else:
                a[cat[fb.item]] -= self.skip_penalty * decay
        return a

    def recommend(
        self,
        user: int,
        feedback: Sequence[Feedback],
        k: int,
        exclude: set[int],
    ) -> np.ndarray:
        """A ranked list of k unseen items for the user; deterministic given the feedback.

        Deterministic on purpose: asked twice with nothing new learned, the cloud returns the
        same unseen items, so a refresh is worth exactly what the new feedback changed.
        """
        a = self.affinity(user, feedback)
        counts = allocate(k, softmax(a / self.temperature))
        taste = self.world.users.taste[user]
        excluded = np.fromiter(exclude, dtype=np.int64) if exclude else None
        chosen: list[np.ndarray] = []
        fits: list[np.ndarray] = []
        for c in np.flatnonzero(counts):
            members = self.by_category[c]
            if excluded is not None:
                members = members[~np.isin(members, excluded)]
            n = min(int(counts[c]), len(members))
            if n == 0:
                continue
            fit = self.static_score[members] / self.item_temperature
            fit = fit + self.taste_weight * (self.world.catalog.latent[members] @ taste)
            best = np.argsort(-fit, kind="stable")[:n]
            chosen.append(members[best])
            fits.append(a[c] + fit[best])
        if not chosen:
            return np.empty(0, dtype=np.int64)
        items, score = np.concatenate(chosen), np.concatenate(fits)
        return items[np.argsort(-score, kind="stable")]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def allocate(k: int, share: np.ndarray) -> np.ndarray:
    """Split k slots over categories in proportion to share (largest remainder method)."""
    exact = k * share
    counts = np.floor(exact).astype(np.int64)
    rest = k - int(counts.sum())
    if rest > 0:
        counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts
