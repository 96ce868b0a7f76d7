"""Learned interest-shift detector on the device: its input encoding, the ONNX model, the prior."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device_agent.policy.features import SessionView
from tandem_core.onnx_session import cpu_session

WINDOW = 16  # the device's last exposures the model reads (SessionView.window)
EVENT_FEATURES = (
    "present", "clicked", "pool_share", "built_around", "in_clicked_since_refresh",
    "in_clicked_before_refresh", "since_refresh", "age",
)  # fmt: skip
SCALARS = (
    "steps_since_refresh", "skip_streak", "prior", "pool_remaining", "ctr_since_refresh",
    "clicks_since_refresh", "pool_concentration", "clicks_before_pool",
)  # fmt: skip
INPUTS = ("events", "scalars")  # ONNX input names: (N, WINDOW, EVENT_FEATURES), (N, SCALARS)
FLEET_PRIOR_KEY = "fleet_prior"  # ONNX metadata: the fleet rate of ShiftPrior events per page
LOW_SHARE = 0.5  # a category with at least half the top category's share: what the pool is for


def detector_inputs(view: SessionView, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs from what the device saw: (WINDOW, EVENT_FEATURES) and (SCALARS,).

    Events are right-aligned (newest last) and zero-padded; `present` marks the real ones. The
    one encoding: training builds its rows with this function too.
    """
    cats, clicked = view.recent_arrays()
    cats, clicked = cats[-WINDOW:], clicked[-WINDOW:]
    n = len(cats)
    after = np.arange(n) >= n - min(len(view.since_refresh), n)
    events = np.zeros((WINDOW, len(EVENT_FEATURES)), dtype=np.float32)
    rows = events[WINDOW - n :]
    rows[:, 0] = 1.0
    rows[:, 1] = clicked
    rows[:, 2] = view.pool_hist[cats] if n else 0.0
    rows[:, 3] = built_around(view.pool_hist, cats)
    rows[:, 4] = np.isin(cats, cats[clicked & after])
    rows[:, 5] = np.isin(cats, cats[clicked & ~after])
    rows[:, 6] = after
    rows[:, 7] = (n - 1 - np.arange(n)) / WINDOW
    n_since = len(view.since_refresh)
    clicks_since = sum(view.since_refresh)
    scalars = np.array(
        [
            view.steps_since_refresh,
            view.skip_streak,
            prior,
            len(view.pool_cats) / view.pool_size,
            clicks_since / n_since if n_since else 0.0,
            clicks_since,
            float(view.pool_hist.max()) if len(view.pool_hist) else 0.0,
            view.clicks - clicks_since,  # 0: the pool was built knowing no click of the session
        ],
        dtype=np.float32,
    )
    return events, scalars


def built_around(pool_hist: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Per item: its category is one the pool was built around (≥ LOW_SHARE × the top share)."""
    top = float(pool_hist.max()) if len(pool_hist) else 0.0
    return (pool_hist[np.asarray(categories, dtype=np.int64)] >= LOW_SHARE * top) & (top > 0)


@dataclass
class ShiftPrior:
    """The device's own rate of clicks away from its pool, per page, shrunk to the fleet's.

    An event is a page with a click on a category the serving pool was not built around: the
    user wanting something the cloud did not build for. Rate = (Σ events + strength·fleet) /
    (Σ pages + strength), both sums decayed every page, so the state is two floats and old
    behaviour fades (memory ≈ 1 / (1 − decay) pages): Beta–Binomial shrinkage of a rate.
    """

    fleet: float
    strength: float = 20.0  # pseudo-pages of fleet evidence
    decay: float = 0.99
    events: float = 0.0
    pages: float = 0.0

    def rate(self) -> float:
        return (self.events + self.strength * self.fleet) / (self.pages + self.strength)

    def on_page(self, pool_hist: np.ndarray, categories: np.ndarray, clicked: np.ndarray) -> None:
        """A page served from the pool whose category mix is `pool_hist`, and its clicks."""
        away = np.asarray(clicked, dtype=bool) & ~built_around(pool_hist, categories)
        self.events = self.decay * self.events + float(away.any())
        self.pages = self.decay * self.pages + 1.0


class ShiftDetector:
    """ONNX shift detector: P(the interest moved away from the cached pool) from a SessionView."""

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        self.session = cpu_session(model_bytes, threads)
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        want = {INPUTS[0]: [WINDOW, len(EVENT_FEATURES)], INPUTS[1]: [len(SCALARS)]}
        if set(shapes) != set(want):
            raise ValueError(f"detector inputs {sorted(shapes)}, agent has {sorted(want)}")
        for name, tail in want.items():
            if list(shapes[name][1:]) != tail:
                raise ValueError(f"detector input {name} has shape {shapes[name]}, agent {tail}")
        meta = self.session.get_modelmeta().custom_metadata_map
        self.fleet_prior = float(meta.get(FLEET_PRIOR_KEY, "nan"))
        if not (math.isfinite(self.fleet_prior) and 0.0 < self.fleet_prior < 1.0):
            raise ValueError(f"detector has no valid {FLEET_PRIOR_KEY} in its metadata")

    def new_prior(self) -> ShiftPrior:
        return ShiftPrior(fleet=self.fleet_prior)

    def probabilities(self, events: np.ndarray, scalars: np.ndarray) -> np.ndarray:
        ev = np.asarray(events, dtype=np.float32).reshape(-1, WINDOW, len(EVENT_FEATURES))
        sc = np.asarray(scalars, dtype=np.float32).reshape(-1, len(SCALARS))
        if len(ev) != len(sc):
            raise ValueError(f"{len(ev)} event rows but {len(sc)} scalar rows")
        if not (np.all(np.isfinite(ev)) and np.all(np.isfinite(sc))):
            raise ValueError("detector inputs must be finite")
        out = self.session.run(None, {INPUTS[0]: ev, INPUTS[1]: sc})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def probability(self, view: SessionView, prior: float) -> float:
        events, scalars = detector_inputs(view, prior)
        return float(self.probabilities(events[None], scalars[None])[0])
