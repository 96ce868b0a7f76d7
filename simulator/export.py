"""Writes the world's feed log in the Taobao UserBehavior CSV layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simulator.loaders import BEHAVIOR_CODES, BehaviorLog, write_taobao_user_behavior
from simulator.logs import Impressions


def to_behavior_log(impressions: Impressions) -> BehaviorLog:
    """Clicks as `pv` and purchases as `buy`, the Taobao UserBehavior reading of a feed log.

    The Taobao layout has no exposure rows, so exposures without a click are not written.
    """
    clicked = impressions.click.astype(bool)
    bought = impressions.purchase.astype(bool)
    parts = [(clicked, "pv"), (bought, "buy")]
    return BehaviorLog(
        user_id=np.concatenate([impressions.user[m] for m, _ in parts]),
        item_id=np.concatenate([impressions.item[m] for m, _ in parts]),
        category_id=np.concatenate([impressions.category[m] for m, _ in parts]),
        behavior=np.concatenate(
            [np.full(int(m.sum()), BEHAVIOR_CODES[name], dtype=np.int8) for m, name in parts]
        ),
        timestamp=np.concatenate([impressions.timestamp[m] for m, _ in parts]),
    ).sorted_by_time()


def write_taobao_csv(path: Path, impressions: Impressions) -> int:
    log = to_behavior_log(impressions)
    write_taobao_user_behavior(path, log)
    return len(log)
