"""Taobao UserBehavior and MovieLens files load, round-trip, and fail naming the bad line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.cloud import ReferenceCloud
from simulator.export import to_behavior_log, write_taobao_csv
from simulator.loaders import (
    BEHAVIOR_CODES,
    BehaviorLog,
    LogFormatError,
    load_movielens_ratings,
    load_taobao_user_behavior,
    write_taobao_user_behavior,
)
from simulator.logs import generate_traffic
from simulator.world import World, WorldConfig

pytestmark = pytest.mark.unit


def _log() -> BehaviorLog:
    return BehaviorLog(
        user_id=np.array([1, 1, 2, 3]),
        item_id=np.array([10, 11, 10, 12]),
        category_id=np.array([5, 5, 5, 6]),
        behavior=np.array([0, 1, 2, 3], dtype=np.int8),
        timestamp=np.array([100, 101, 99, 300]),
    )


def test_taobao_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "UserBehavior.csv"
    write_taobao_user_behavior(path, _log())
    assert path.read_text().splitlines()[1] == "1,11,5,buy,101"
    loaded = load_taobao_user_behavior(path)
    for name in ("user_id", "item_id", "category_id", "behavior", "timestamp"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(_log(), name))


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("1,2,3,pv", "expected 5 fields"),
        ("1,2,3,click,100", "unknown behavior type 'click'"),
        ("1,two,3,pv,100", "field 2 is not an integer"),
        ("", "expected 5 fields"),
    ],
)
def test_taobao_malformed_line_names_the_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"1,2,3,pv,100\n4,5,6,buy,101\n{bad_line}\n")
    with pytest.raises(LogFormatError, match=f"bad.csv:3: {message}"):
        load_taobao_user_behavior(path)


def test_movielens_dat_and_csv(tmp_path: Path) -> None:
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::10::5::978300760\n2::11::3::978300761\n")
    log = load_movielens_ratings(dat)
    assert len(log) == 3  # two views + one fav (rating >= 4)
    assert (log.behavior == BEHAVIOR_CODES["fav"]).sum() == 1
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,10,4.5,5\n1,12,2.0,6\n")
    log = load_movielens_ratings(csv)
    assert sorted(log.item_id.tolist()) == [10, 10, 12]
    csv.write_text("userId,movieId,rating,timestamp\n1,10,4.5,5\n1,12,great,6\n")
    with pytest.raises(LogFormatError, match=r"ratings\.csv:3: rating is not a number"):
        load_movielens_ratings(csv)


def test_time_split_never_puts_test_before_train() -> None:
    rng = np.random.default_rng(0)
    n = 500
    log = BehaviorLog(
        rng.integers(0, 9, n), rng.integers(0, 99, n), rng.integers(0, 5, n),
        rng.integers(0, 4, n).astype(np.int8), rng.integers(0, 10_000, n),
    )  # fmt: skip
    train, test = log.time_split(0.8)
    assert len(train) + len(test) == n
    assert train.timestamp.max() <= test.timestamp.min()


def test_world_log_exports_to_taobao_layout_and_loads_back(tmp_path: Path) -> None:
    world = World(WorldConfig(n_users=20, n_items=800, n_categories=6, seed=2))
    imp = generate_traffic(world, ReferenceCloud(world), seed=2).impressions
    path = tmp_path / "world.csv"
    rows = write_taobao_csv(path, imp)
    loaded = load_taobao_user_behavior(path)
    assert len(loaded) == rows == int(imp.click.sum() + imp.purchase.sum())
    expected = to_behavior_log(imp)
    np.testing.assert_array_equal(loaded.item_id, expected.item_id)
    assert np.all(np.diff(loaded.timestamp) >= 0)
