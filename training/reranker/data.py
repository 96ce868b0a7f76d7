"""Per-step training examples for the device re-ranker, built from the world's feed log."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.logs import Impressions, Steps
from tandem_core.behavior import PAD, gather_rows, one_hot_actions, pad_behavior

__all__ = ["PAD", "StepExamples", "gather_rows", "one_hot_actions", "step_examples"]


@dataclass(frozen=True)
class StepExamples:
    """One row per feed step: the device's recent events, the page shown, and its clicks."""

    behavior_items: np.ndarray  # (S, L) item ids, PAD on the left
    behavior_actions: np.ndarray  # (S, L) 0 exposure, 1 click, 2 purchase, PAD
    candidates: np.ndarray  # (S, C) items shown at the step, PAD-padded
    cloud_score: np.ndarray  # (S, C) the cloud's score of each shown item
    position: np.ndarray  # (S, C) the slot each was shown in
    label: np.ndarray  # (S, C) 1 = clicked
    session: np.ndarray  # (S,)
    intent_changed: np.ndarray  # (S,) ground truth: intent differs from the pool's (eval only)

    def __len__(self) -> int:
        return int(self.session.shape[0])


def step_examples(
    imp: Impressions, cloud_score: np.ndarray, steps: Steps, max_len: int, page: int
) -> StepExamples:
    """Events before each step of the same session (the device only knows its session)."""
    pool_intent = {
        (int(s), int(t)): int(p)
        for s, t, p in zip(steps.session, steps.step, steps.pool_intent, strict=True)
    }
    order = np.lexsort((imp.position, imp.step, imp.session))
    keys = np.stack([imp.session[order], imp.step[order]], axis=1)
    starts = np.flatnonzero(np.any(np.diff(keys, axis=0) != 0, axis=1)) + 1
    groups = np.split(order, starts)
    n = len(groups)
    out: dict[str, np.ndarray] = {
        "behavior_items": np.full((n, max_len), PAD, np.int64),
        "behavior_actions": np.full((n, max_len), PAD, np.int64),
        "candidates": np.full((n, page), PAD, np.int64),
        "cloud_score": np.zeros((n, page), np.float32),
        "position": np.zeros((n, page), np.int64),
        "label": np.zeros((n, page), np.float32),
    }
    session = np.empty(n, np.int64)
    changed = np.empty(n, bool)
    events: list[tuple[int, int]] = []
    for g, rows in enumerate(groups):
        s = int(imp.session[rows[0]])
        if g == 0 or s != session[g - 1]:
            events = []
        out["behavior_items"][g], out["behavior_actions"][g] = pad_behavior(
            [e[0] for e in events], [e[1] for e in events], max_len
        )
        k = min(len(rows), page)
        out["candidates"][g, :k] = imp.item[rows[:k]]
        out["cloud_score"][g, :k] = cloud_score[rows[:k]]
        out["position"][g, :k] = imp.position[rows[:k]]
        out["label"][g, :k] = imp.click[rows[:k]]
        session[g] = s
        changed[g] = int(imp.intent[rows[0]]) != pool_intent[(s, int(imp.step[rows[0]]))]
        for r in rows:
            action = 2 if imp.purchase[r] else 1 if imp.click[r] else 0
            events.append((int(imp.item[r]), action))
    return StepExamples(**out, session=session, intent_changed=changed)
