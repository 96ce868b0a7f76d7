"""Training and evaluation views of a log: time split, behaviour sequences, ranking tasks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from simulator.logs import Impressions

PAD = -1  # padding id in behaviour sequences


@dataclass(frozen=True)
class TimeSplit:
    """Sessions by start time: train < valid < test, never shuffled across time."""

    train: Impressions
    valid: Impressions
    test: Impressions

    def __iter__(self) -> Iterator[Impressions]:
        return iter((self.train, self.valid, self.test))


def split_by_time(imp: Impressions, valid_frac: float = 0.1, test_frac: float = 0.2) -> TimeSplit:
    """Split whole sessions on their start time so a session never straddles two parts."""
    if not 0 <= valid_frac < 1 or not 0 < test_frac < 1 or valid_frac + test_frac >= 1:
        raise ValueError("fractions must satisfy 0 <= valid, 0 < test, valid + test < 1")
    sessions, first = np.unique(imp.session, return_index=True)
    start = imp.timestamp[first]
    order = np.argsort(start, kind="stable")
    n = len(sessions)
    n_test, n_valid = round(n * test_frac), round(n * valid_frac)
    part = np.zeros(n, dtype=np.int8)
    part[order[n - n_test :]] = 2
    part[order[n - n_test - n_valid : n - n_test]] = 1
    lookup = dict(zip(sessions.tolist(), part.tolist(), strict=True))
    row_part = np.fromiter((lookup[s] for s in imp.session.tolist()), dtype=np.int8, count=len(imp))
    return TimeSplit(
        imp.select(row_part == 0), imp.select(row_part == 1), imp.select(row_part == 2)
    )


def click_histories(imp: Impressions, max_len: int) -> np.ndarray:
    """For every impression, the user's last `max_len` clicked items strictly before its step.

    Rows are right-aligned (most recent last) and padded with PAD on the left. Clicks of the
    same step are not visible to each other: a page is shown before any of it is clicked.
    """
    out = np.full((len(imp), max_len), PAD, dtype=np.int64)
    order = np.lexsort((imp.position, imp.step, imp.timestamp, imp.user))
    users, steps = imp.user[order], imp.step[order]
    sessions, items, clicks = imp.session[order], imp.item[order], imp.click[order]
    history: list[int] = []
    pending: list[int] = []
    prev_key: tuple[int, int, int] | None = None
    for j in range(len(order)):
        key = (int(users[j]), int(sessions[j]), int(steps[j]))
        if prev_key is None or key != prev_key:
            if prev_key is not None and key[0] != prev_key[0]:
                history, pending = [], []
            history.extend(pending)
            pending = []
            history = history[-max_len:]
            prev_key = key
        if history:
            out[order[j], max_len - len(history) :] = history
        if clicks[j]:
            pending.append(int(items[j]))
    return out


def full_history_before(
    imp: Impressions, context: Impressions, max_len: int
) -> dict[int, np.ndarray]:
    """Per session of `imp`: the user's last clicks in `context` ∪ `imp` before it started."""
    both_time = np.concatenate([context.timestamp, imp.timestamp])
    both_user = np.concatenate([context.user, imp.user])
    both_item = np.concatenate([context.item, imp.item])
    both_click = np.concatenate([context.click, imp.click]).astype(bool)
    clicked = np.flatnonzero(both_click)
    order = clicked[np.lexsort((both_time[clicked], both_user[clicked]))]
    c_user, c_time, c_item = both_user[order], both_time[order], both_item[order]
    result: dict[int, np.ndarray] = {}
    sess, first = np.unique(imp.session, return_index=True)
    for s, i in zip(sess.tolist(), first.tolist(), strict=True):
        user, start = imp.user[i], imp.timestamp[i]
        lo, hi = np.searchsorted(c_user, [user, user + 1])
        cut = lo + np.searchsorted(c_time[lo:hi], start, side="left")
        hist = c_item[max(lo, cut - max_len) : cut]
        row = np.full(max_len, PAD, dtype=np.int64)
        if len(hist):
            row[max_len - len(hist) :] = hist
        result[s] = row
    return result


@dataclass(frozen=True)
class RankingTask:
    """Per held-out session: candidates (its exposures + sampled negatives) and click labels."""

    session: np.ndarray  # (S,)
    user: np.ndarray  # (S,)
    history: np.ndarray  # (S, L) clicks before the session started
    candidates: np.ndarray  # (S, C) padded with PAD
    relevance: np.ndarray  # (S, C) 0 = not clicked, 1 = clicked, 2 = purchased


def ranking_task(
    test: Impressions,
    context: Impressions,
    popularity: np.ndarray,
    n_negatives: int = 100,
    max_len: int = 30,
    seed: int = 0,
) -> RankingTask:
    """Next-session ranking: rank a session's exposures among popularity-sampled negatives."""
    rng = np.random.default_rng(seed)
    hist = full_history_before(test, context, max_len)
    sess = np.unique(test.session)
    order = np.argsort(test.session, kind="stable")
    bounds = np.searchsorted(test.session[order], np.append(sess, sess[-1] + 1))
    rows_c, rows_r, users = [], [], []
    p = popularity / popularity.sum()
    for k in range(len(sess)):
        rows = order[bounds[k] : bounds[k + 1]]
        items = test.item[rows]
        rel = test.click[rows].astype(np.int64) + test.purchase[rows].astype(np.int64)
        neg = rng.choice(len(p), size=n_negatives * 2, p=p)
        neg = np.setdiff1d(np.unique(neg), items)[:n_negatives]
        rows_c.append(np.concatenate([items, neg]))
        rows_r.append(np.concatenate([rel, np.zeros(len(neg), dtype=np.int64)]))
        users.append(int(test.user[rows[0]]))
    width = max(len(r) for r in rows_c)
    cand = np.full((len(sess), width), PAD, dtype=np.int64)
    relv = np.zeros((len(sess), width), dtype=np.int64)
    for k, (c, r) in enumerate(zip(rows_c, rows_r, strict=True)):
        cand[k, : len(c)], relv[k, : len(r)] = c, r
    history = np.stack([hist[int(s)] for s in sess])
    return RankingTask(sess, np.asarray(users), history, cand, relv)
