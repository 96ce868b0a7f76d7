"""The seeded world: items, users and the ground-truth click / purchase model (DESIGN.md §4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class WorldConfig:
    """Every parameter of the world; docs/world.md explains each one."""

    seed: int = 0
    n_users: int = 4000
    n_items: int = 100_000
    n_categories: int = 48
    latent_dim: int = 16
    item_zipf: float = 1.1  # popularity of the item at rank r is proportional to r^-item_zipf
    category_zipf: float = 0.8  # share of items per category, also Zipf over category rank
    interests_per_user: tuple[int, int] = (2, 6)  # a user cares about this many categories
    interest_smoothing: float = 0.02  # mass spread over all other categories
    switch_hazard: float = 0.12  # probability per feed step that the short-term intent switches
    drift_rate: float = 0.03  # a click moves long-term interest this much toward its category
    page_size: int = 4  # items shown per feed step
    pool_size: int = 48  # items in one cloud list
    mean_session_steps: float = 12.0
    max_session_steps: int = 30
    sessions_per_user: float = 5.0
    days: int = 8  # simulated calendar span of the logs
    examine_decay: float = 0.6  # examination probability at page position p is (1 + p)^-decay
    click_bias: float = -5.4
    w_intent: float = 2.2  # logit bonus when an item matches the short-term intent
    w_interest: float = 2.5  # times the long-term interest share of the item's category
    w_taste: float = 0.8  # times cos(user taste, item latent)
    w_quality: float = 0.6
    w_popularity: float = 0.3  # times the standardised log popularity
    purchase_bias: float = -2.2
    w_purchase_quality: float = 0.9
    purchase_reward: float = 3.0  # reward of a purchase in units of a click


@dataclass(frozen=True)
class Catalog:
    """Items: category, latent vector, quality and long-tail popularity."""

    category: np.ndarray  # (n_items,) int64
    latent: np.ndarray  # (n_items, d) float32, unit norm
    quality: np.ndarray  # (n_items,) float32
    popularity: np.ndarray  # (n_items,) float64, sums to 1
    pop_z: np.ndarray  # (n_items,) float32, standardised log popularity
    centroids: np.ndarray  # (n_categories, d) float32

    @property
    def n_items(self) -> int:
        return int(self.category.shape[0])


@dataclass(frozen=True)
class Population:
    """Users: long-term interest over categories and a taste vector."""

    interest: np.ndarray  # (n_users, n_categories) float64, rows sum to 1
    taste: np.ndarray  # (n_users, d) float32, unit norm

    @property
    def n_users(self) -> int:
        return int(self.interest.shape[0])


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return rng.permutation(weights / weights.sum())


def make_catalog(cfg: WorldConfig, rng: np.random.Generator) -> Catalog:
    centroids = _unit(rng.standard_normal((cfg.n_categories, cfg.latent_dim)))
    category = rng.choice(
        cfg.n_categories,
        size=cfg.n_items,
        p=_zipf_weights(cfg.n_categories, cfg.category_zipf, rng),
    ).astype(np.int64)
    noise = rng.standard_normal((cfg.n_items, cfg.latent_dim)) * 0.6
    latent = _unit(centroids[category] + noise)
    quality = rng.normal(0.0, 0.6, cfg.n_items).astype(np.float32)
    popularity = _zipf_weights(cfg.n_items, cfg.item_zipf, rng)
    log_pop = np.log(popularity)
    pop_z = ((log_pop - log_pop.mean()) / log_pop.std()).astype(np.float32)
    return Catalog(category, latent, quality, popularity, pop_z, centroids)


def make_population(cfg: WorldConfig, catalog: Catalog, rng: np.random.Generator) -> Population:
    lo, hi = cfg.interests_per_user
    interest = np.full((cfg.n_users, cfg.n_categories), cfg.interest_smoothing / cfg.n_categories)
    category_share = np.bincount(catalog.category, minlength=cfg.n_categories) + 1.0
    category_share /= category_share.sum()
    for u in range(cfg.n_users):
        k = int(rng.integers(lo, hi + 1))
        cats = rng.choice(cfg.n_categories, size=k, replace=False, p=category_share)
        interest[u, cats] += (1.0 - cfg.interest_smoothing) * rng.dirichlet(np.ones(k))
    interest /= interest.sum(axis=1, keepdims=True)
    taste = _unit(
        interest @ catalog.centroids + 0.3 * rng.standard_normal((cfg.n_users, cfg.latent_dim))
    )
    return Population(interest, taste)


@dataclass
class World:
    """A seeded world: the same config always builds the same catalog and population."""

    cfg: WorldConfig
    catalog: Catalog = field(init=False)
    users: Population = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.cfg.seed)
        self.catalog = make_catalog(self.cfg, rng)
        self.users = make_population(self.cfg, self.catalog, rng)

    def examination(self, n: int) -> np.ndarray:
        """Probability that the user looks at each of the first n positions of a page."""
        return (1.0 + np.arange(n)) ** -self.cfg.examine_decay

    def attraction(
        self, user: int, intent: int, interest: np.ndarray, items: np.ndarray
    ) -> np.ndarray:
        """P(click | examined) of each item for a user with this intent and long-term interest."""
        cfg, cat = self.cfg, self.catalog
        c = cat.category[items]
        logit = (
            cfg.click_bias
            + cfg.w_intent * (c == intent)
            + cfg.w_interest * interest[c]
            + cfg.w_taste * (cat.latent[items] @ self.users.taste[user])
            + cfg.w_quality * cat.quality[items]
            + cfg.w_popularity * cat.pop_z[items]
        )
        return 1.0 / (1.0 + np.exp(-logit))

    def purchase_given_click(self, intent: int, items: np.ndarray) -> np.ndarray:
        cfg, cat = self.cfg, self.catalog
        logit = (
            cfg.purchase_bias
            + cfg.w_purchase_quality * cat.quality[items]
            + 0.8 * (cat.category[items] == intent)
        )
        return 1.0 / (1.0 + np.exp(-logit))

    def click_probs(
        self, user: int, intent: int, interest: np.ndarray, page: np.ndarray
    ) -> np.ndarray:
        """True click probability of each item of a page shown in this order (position bias)."""
        return self.examination(len(page)) * self.attraction(user, intent, interest, page)

    def expected_reward(
        self, user: int, intent: int, interest: np.ndarray, page: np.ndarray
    ) -> float:
        """Expected clicks + purchase_reward × purchases of a page shown in this order."""
        p_click = self.click_probs(user, intent, interest, page)
        p_buy = self.purchase_given_click(intent, page)
        return float(np.sum(p_click * (1.0 + self.cfg.purchase_reward * p_buy)))
