"""The re-ranker's behaviour window: one definition for training, evaluation and the agent.

The EdgeRec GRU reads the window from the left, so zeros in front of the events change its state:
the model must see at serving time exactly the left-padded, fixed-length window it was trained
on (unpadded windows moved the logits by up to 0.24 on the same events).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD = -1  # item id and action code of a padding slot
N_ACTIONS = 3  # protos.actions.Action: exposure, click, purchase


def pad_behavior(
    items: Sequence[int] | np.ndarray, actions: Sequence[int] | np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """The latest `length` events (most recent last), left-padded with PAD: two (length,) int64."""
    ids, codes = np.asarray(items, np.int64)[-length:], np.asarray(actions, np.int64)[-length:]
    if ids.shape != codes.shape:
        raise ValueError(f"{ids.shape[0]} items but {codes.shape[0]} actions")
    out_ids = np.full(length, PAD, np.int64)
    out_codes = np.full(length, PAD, np.int64)
    if len(ids):
        out_ids[length - len(ids) :], out_codes[length - len(ids) :] = ids, codes
    return out_ids, out_codes


def one_hot_actions(actions: np.ndarray) -> np.ndarray:
    """(…, L) action codes with PAD → (…, L, 3) float32 one-hot, zeros at PAD."""
    out = np.zeros((*actions.shape, N_ACTIONS), dtype=np.float32)
    valid = actions >= 0
    out[valid, actions[valid]] = 1.0
    return out


def gather_rows(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Embedding rows of items, zeros at PAD."""
    emb = rows[np.maximum(items, 0)]
    emb[items < 0] = 0.0
    return emb.astype(np.float32)


def behavior_inputs(
    rows: np.ndarray,
    items: Sequence[int] | np.ndarray,
    actions: Sequence[int] | np.ndarray,
    length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's `behavior` (1, length, D) and `behavior_action` (1, length, 3) inputs for one
    window; `items` index `rows`."""
    ids, codes = pad_behavior(items, actions, length)
    return gather_rows(rows, ids)[None], one_hot_actions(codes)[None]
