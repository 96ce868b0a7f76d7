"""Time split never leaks the future; histories only hold clicks from before a step."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cloud import ReferenceCloud
from simulator.dataset import PAD, click_histories, ranking_task, split_by_time
from simulator.logs import Impressions, generate_traffic
from simulator.world import World, WorldConfig

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def impressions() -> Impressions:
    world = World(WorldConfig(n_users=60, n_items=2000, n_categories=10, seed=4))
    return generate_traffic(world, ReferenceCloud(world), seed=4).impressions


def _session_starts(imp: Impressions) -> np.ndarray:
    _, first = np.unique(imp.session, return_index=True)
    return imp.timestamp[first]


def test_split_is_by_time_and_keeps_sessions_whole(impressions: Impressions) -> None:
    split = split_by_time(impressions, valid_frac=0.1, test_frac=0.2)
    assert len(split.train) + len(split.valid) + len(split.test) == len(impressions)
    assert _session_starts(split.train).max() <= _session_starts(split.valid).min()
    assert _session_starts(split.valid).max() <= _session_starts(split.test).min()
    parts = [set(p.session.tolist()) for p in split]
    assert not parts[0] & parts[1] and not parts[1] & parts[2] and not parts[0] & parts[2]


def test_split_rejects_bad_fractions(impressions: Impressions) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_by_time(impressions, valid_frac=0.5, test_frac=0.6)


def test_histories_hold_only_earlier_clicks_of_the_same_user(impressions: Impressions) -> None:
    hist = click_histories(impressions, max_len=8)
    clicked = impressions.click.astype(bool)
    rng = np.random.default_rng(0)
    for row in rng.choice(len(impressions), size=300, replace=False):
        user, ts, step = impressions.user[row], impressions.timestamp[row], impressions.step[row]
        same_user = (impressions.user == user) & clicked
        before = same_user & (
            (impressions.timestamp < ts)
            | ((impressions.session == impressions.session[row]) & (impressions.step < step))
        )
        expected = set(impressions.item[before].tolist())
        got = hist[row][hist[row] != PAD]
        assert set(got.tolist()) <= expected
        assert len(got) == min(8, int(before.sum()))


def test_ranking_task_labels_match_the_log(impressions: Impressions) -> None:
    split = split_by_time(impressions)
    pop = np.ones(2000)
    task = ranking_task(split.test, split.train, pop, n_negatives=20)
    assert len(task.session) == len(np.unique(split.test.session))
    for k in range(min(20, len(task.session))):
        rows = split.test.session == task.session[k]
        clicked = set(split.test.item[rows & split.test.click.astype(bool)].tolist())
        cand, rel = task.candidates[k], task.relevance[k]
        assert set(cand[(rel > 0)].tolist()) == clicked
        assert len(set(cand[cand != PAD].tolist())) == int((cand != PAD).sum())
