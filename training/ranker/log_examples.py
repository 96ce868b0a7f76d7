"""Ranker examples from a behaviour log (Taobao UserBehavior layout), split by time.

The layout records clicks (`pv`) and purchases (`buy`), not exposures: every example here is a
click, and the items the user did not click are sampled from the catalogue by training
popularity (`train.with_sampled_negatives` in training, the same draw with a fixed seed for
validation). The AUC on such a set says how well the ranker tells a clicked item from a
popular one, not the exposure-CTR AUC the world's logs give.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from simulator.dataset import click_histories
from simulator.loaders import (
    BEHAVIOR_CODES,
    BehaviorLog,
    load_movielens_ratings,
    load_taobao_user_behavior,
)
from simulator.logs import Impressions
from simulator.pipeline import HISTORY_LEN
from training.gate import Validation


def load_logs(path: Path) -> BehaviorLog:
    """A file (Taobao UserBehavior CSV, or MovieLens `ratings.*`) or a directory of the event
    consumer's `user_behavior-*.csv` parts."""
    path = Path(path)
    files = sorted(path.glob("user_behavior-*.csv")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path} holds no user_behavior-*.csv")
    parts = [
        load_movielens_ratings(f) if f.name.startswith("ratings") else load_taobao_user_behavior(f)
        for f in files
    ]
    names = [f.name for f in fields(BehaviorLog)]
    return BehaviorLog(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def log_impressions(log: BehaviorLog, n_items: int, item_category: np.ndarray) -> Impressions:
    """One impression per click, in time order; purchase = the user bought the item at or after
    it; one session per user (the layout has none), categories from the catalogue."""
    log = log.sorted_by_time()
    if len(log) and (log.item_id.min() < 0 or log.item_id.max() >= n_items):
        raise ValueError(
            f"item ids outside the served catalogue of {n_items} items: "
            "these logs need a catalogue of their own (the models job)"
        )
    buys = log.behavior == BEHAVIOR_CODES["buy"]
    last_buy: dict[tuple[int, int], int] = {}
    for u, i, t in zip(
        log.user_id[buys].tolist(),
        log.item_id[buys].tolist(),
        log.timestamp[buys].tolist(),
        strict=True,
    ):
        last_buy[(u, i)] = max(t, last_buy.get((u, i), t))
    clicks = log.behavior == BEHAVIOR_CODES["pv"]
    user, item, ts = log.user_id[clicks], log.item_id[clicks], log.timestamp[clicks]
    bought = [
        last_buy.get((u, i), -1) >= t
        for u, i, t in zip(user.tolist(), item.tolist(), ts.tolist(), strict=True)
    ]
    n = len(item)
    return Impressions(
        session=user,
        user=user,
        step=np.arange(n),
        position=np.zeros(n, np.int64),
        item=item,
        category=item_category[item],
        click=np.ones(n, np.int8),
        purchase=np.array(bought, np.int8),
        timestamp=ts,
        intent=np.zeros(n, np.int8),
    )


@dataclass(frozen=True)
class LogSplit:
    """Train head and validation tail of a log's impressions, each with its click histories."""

    train: Impressions
    train_history: np.ndarray
    valid: Impressions
    valid_history: np.ndarray
    cut: int  # first timestamp (s) of the validation tail


def split_log(imp: Impressions, valid_frac: float) -> LogSplit:
    """The last `valid_frac` of the clicks by time is the validation tail; histories look back
    over the whole log (a tail click sees the head's clicks before it, as serving would)."""
    if not 0 < valid_frac < 1 or len(imp) < 2:
        raise ValueError("need at least two clicks and 0 < valid_frac < 1")
    history = click_histories(imp, HISTORY_LEN)
    n_valid = max(1, round(len(imp) * valid_frac))
    is_valid = np.zeros(len(imp), bool)
    is_valid[len(imp) - n_valid :] = True  # impressions are in time order
    return LogSplit(
        imp.select(~is_valid),
        history[~is_valid],
        imp.select(is_valid),
        history[is_valid],
        int(imp.timestamp[is_valid][0]),
    )


def negative_sampling(train: Impressions, n_items: int) -> np.ndarray:
    """sqrt(training clicks + 1) per item: the popularity the negatives are drawn by."""
    return np.sqrt(np.bincount(train.item, minlength=n_items) + 1.0)


def logs_validation(log: BehaviorLog, n_items: int, valid_frac: float, seed: int) -> Validation:
    """The tail's clicks as positives, one sampled item per click (same history) as negative.
    Categories do not enter the ranker's inputs (it looks them up itself), so none are needed."""
    imp = log_impressions(log, n_items, np.zeros(n_items, np.int64))
    split = split_log(imp, valid_frac)
    weights = negative_sampling(split.train, n_items)
    rng = np.random.default_rng([seed, 7])
    negatives = rng.choice(n_items, size=len(split.valid), p=weights / weights.sum())
    n = len(split.valid)
    return Validation(
        np.concatenate([split.valid_history, split.valid_history]),
        np.concatenate([split.valid.item, negatives]),
        np.concatenate([np.ones(n, np.int8), np.zeros(n, np.int8)]),
        f"logs tail: last {valid_frac:.0%} of {len(imp)} clicks by time (from "
        f"{split.cut}), one popularity-sampled negative per click (seed {seed})",
    )
