"""Properties of the aggregation, the defences and the index-privacy padding."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_service.federated.aggregate import (
    fedavg_dense,
    fedlaavg_merge,
    fedsubavg,
    most_outdated_first,
    submodel_fedavg,
)
from cloud_service.federated.defences import Defences, aggregate
from cloud_service.federated.robust import clip_to_median, clip_update, trimmed_mean, update_norm
from tandem_core.federated.privacy import cover_pulled, epsilon, pad_ids
from tandem_core.federated.update import ModelUpdate

pytestmark = pytest.mark.unit
DIM = 3


def update(seed: int, ids: list[int], n: int | None = None) -> ModelUpdate:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, size=len(ids))
    return ModelUpdate(
        f"d{seed}", np.array(ids, dtype=np.int64),
        rng.normal(size=(len(ids), DIM)).astype(np.float32), counts,
        {"w": rng.normal(size=(2, 2)).astype(np.float32)}, n or int(counts.max(initial=1)),
    )  # fmt: skip


id_sets = st.lists(
    st.lists(st.integers(0, 15), min_size=1, max_size=6, unique=True), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None)
@given(sets=id_sets, seed=st.integers(0, 1000))
def test_order_of_devices_does_not_matter(sets: list[list[int]], seed: int) -> None:
    updates = [update(seed + i, ids) for i, ids in enumerate(sets)]
    perm = np.random.default_rng(seed).permutation(len(updates))
    for fn in (fedsubavg, submodel_fedavg):
        ids_a, a = fn(updates, DIM)
        ids_b, b = fn([updates[i] for i in perm], DIM)
        assert ids_a.tolist() == ids_b.tolist()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        fedavg_dense(updates)["w"], fedavg_dense([updates[i] for i in perm])["w"], rtol=1e-5
    )


@settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(st.integers(0, 30), min_size=1, max_size=8, unique=True), seed=st.integers(0, 99)
)
def test_a_single_device_reproduces_its_own_update(ids: list[int], seed: int) -> None:
    u = update(seed, ids)
    got_ids, delta = fedsubavg([u], DIM)
    order = np.argsort(u.item_ids)
    assert got_ids.tolist() == sorted(ids)
    np.testing.assert_allclose(delta, u.row_deltas[order], rtol=1e-6)
    np.testing.assert_allclose(fedavg_dense([u])["w"], u.dense_deltas["w"], rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(n_dev=st.integers(1, 6), seed=st.integers(0, 99))
def test_fedsubavg_is_fedavg_when_every_device_holds_every_row(n_dev: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [0, 1, 2, 3]
    updates = []
    for d in range(n_dev):
        n = int(rng.integers(1, 9))  # counts equal to num_samples: the same weights
        updates.append(ModelUpdate(
            f"d{d}", np.array(ids), rng.normal(size=(4, DIM)).astype(np.float32),
            np.full(4, n), {}, n,
        ))  # fmt: skip
    _, sub = fedsubavg(updates, DIM)
    _, avg = submodel_fedavg(updates, DIM)
    np.testing.assert_allclose(sub, avg, rtol=1e-5, atol=1e-6)


def test_fedsubavg_does_not_shrink_cold_rows_as_fedavg_does() -> None:
    hot = [ModelUpdate(f"d{i}", np.array([0]), np.ones((1, DIM), np.float32), np.array([1]), {}, 1)
           for i in range(9)]  # fmt: skip
    cold = ModelUpdate(
        "c", np.array([0, 1]), np.ones((2, DIM), np.float32), np.array([1, 1]), {}, 1
    )
    _, sub = fedsubavg([*hot, cold], DIM)
    _, avg = submodel_fedavg([*hot, cold], DIM)
    assert sub[1, 0] == pytest.approx(1.0)  # the one holder's step, as it sent it
    assert avg[1, 0] == pytest.approx(0.1)  # diluted by the 9 devices without the row (N/N_m)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 500), max_norm=st.floats(0.01, 10))
def test_clipping_bounds_the_norm_and_keeps_the_direction(seed: int, max_norm: float) -> None:
    u = update(seed, [1, 2, 3])
    c = clip_update(u, max_norm)
    assert update_norm(c) <= max_norm * (1 + 1e-5)
    if update_norm(u) > max_norm:
        ratio = c.row_deltas / u.row_deltas
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    good=st.lists(st.floats(-1, 1), min_size=6, max_size=20),
    bad=st.lists(st.floats(1e3, 1e6), min_size=1, max_size=2),
)  # fmt: skip
def test_trimmed_mean_ignores_a_few_outliers(good: list[float], bad: list[float]) -> None:
    values = np.array(good + bad)[:, None]
    trim = math.ceil(len(bad)) / len(values) + 1e-9
    out = trimmed_mean(values, trim)
    assert -1 <= out[0] <= 1


def test_defences_stop_a_scaled_attacker() -> None:
    honest = [
        ModelUpdate(
            f"h{i}",
            np.array([0]),
            np.full((1, DIM), 0.1, np.float32),
            np.array([1]),
            {"w": np.full(2, 0.1, np.float32)},
            1,
        )
        for i in range(9)
    ]
    evil = ModelUpdate("evil", np.array([0]), np.full((1, DIM), -100.0, np.float32),
                        np.array([1]), {"w": np.full(2, -100.0, np.float32)}, 1)  # fmt: skip
    _, plain, dense_plain = aggregate([*honest, evil], DIM, Defences())
    _, safe, dense_safe = aggregate([*honest, evil], DIM, Defences(clip_norm=0.5, trim=0.1))
    assert plain[0, 0] < -5 and dense_plain["w"][0] < -5
    assert abs(safe[0, 0]) < 0.2 and dense_safe["w"][0] == pytest.approx(0.1)


@settings(max_examples=60, deadline=None)
@given(p=st.floats(0.05, 0.99), q=st.floats(0.001, 0.04))
def test_epsilon_grows_with_keep_and_shrinks_with_decoys(p: float, q: float) -> None:
    e = epsilon(p, q)
    assert e > 0 and epsilon(min(p + 0.005, 0.999), q) >= e and epsilon(p, q / 2) >= e
    assert epsilon(1.0, q) == math.inf


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.floats(0.5, 1.0), q=st.floats(0.0, 0.3))
def test_padding_keeps_only_true_and_pool_ids(seed: int, p: float, q: float) -> None:
    rng = np.random.default_rng(seed)
    true = rng.choice(1000, size=20, replace=False)
    pool = rng.choice(1000, size=200, replace=False)
    padded = pad_ids(true, pool, p, q, rng)
    assert set(padded.tolist()) <= set(true.tolist()) | set(pool.tolist())
    if p == 1.0:
        assert set(true.tolist()) <= set(padded.tolist())


def test_push_covers_every_pulled_row() -> None:
    pulled = np.array([3, 5, 8, 9])
    ids, d, c = cover_pulled(pulled, np.array([8, 3]), np.ones((2, DIM)), np.array([2, 1]))
    assert ids.tolist() == [3, 5, 8, 9] and c.tolist() == [1, 0, 2, 0]
    assert not d[1].any() and d[2].all()
    with pytest.raises(ValueError):
        cover_pulled(pulled, np.array([4]), np.ones((1, DIM)), np.array([1]))
    with pytest.raises(ValueError):
        epsilon(0.1, 0.2)  # q ≥ p: no signal


@settings(max_examples=40, deadline=None)
@given(sets=id_sets, seed=st.integers(0, 1000), split=st.integers(0, 6))
def test_fedlaavg_keeps_each_device_latest_update(
    sets: list[list[int]], seed: int, split: int
) -> None:
    first = [update(seed + i, ids) for i, ids in enumerate(sets)]
    fresh = [update(seed + 500 + i, ids) for i, ids in enumerate(sets[:split])]
    fresh = [ModelUpdate(f"d{seed + i}", u.item_ids, u.row_deltas, u.row_counts,
                          u.dense_deltas, u.num_samples) for i, u in enumerate(fresh)]  # fmt: skip
    merged = fedlaavg_merge(fedlaavg_merge({}, first), fresh)
    assert sorted(merged) == sorted(u.device_id for u in first)  # absent devices still count
    for u in fresh:
        assert merged[u.device_id] is u  # a device's newer update replaces its older one
    # with nobody new, FedLaAvg re-applies FedSubAvg over the latest updates
    again = fedlaavg_merge(merged, [])
    np.testing.assert_allclose(
        fedsubavg(list(merged.values()), DIM)[1], fedsubavg(list(again.values()), DIM)[1]
    )


def test_most_outdated_devices_are_selected_first() -> None:
    last = {"a": 3, "b": 1, "c": 2}
    assert most_outdated_first(["a", "b", "c", "d"], last, 2) == ["d", "b"]  # never, then oldest
    assert most_outdated_first(["a", "c"], last, 5) == ["c", "a"]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), scale=st.floats(2.0, 1000.0))
def test_median_clipping_bounds_a_minority_of_scaled_updates(seed: int, scale: float) -> None:
    honest = [update(seed + i, [1, 2, 3]) for i in range(7)]
    bad = [replace(u, row_deltas=u.row_deltas * -scale,
                   dense_deltas={k: v * -scale for k, v in u.dense_deltas.items()})
           for u in (update(seed + 100, [1, 2]), update(seed + 101, [3]))]  # fmt: skip
    clipped = clip_to_median([*honest, *bad])
    bound = max(update_norm(u) for u in clipped[:7])
    assert all(update_norm(u) <= bound * (1 + 1e-5) for u in clipped)  # nobody above the median
    assert (
        sorted(update_norm(u) for u in clipped[:7])[:3]
        == sorted(update_norm(u) for u in honest)[:3]
    )


@settings(max_examples=40, deadline=None)
@given(sets=id_sets, seed=st.integers(0, 1000), cap=st.floats(1.0, 50.0))
def test_capped_correction_only_shrinks_rare_rows(
    sets: list[list[int]], seed: int, cap: float
) -> None:
    updates = [update(seed + i, ids) for i, ids in enumerate(sets)]
    ids, sub = fedsubavg(updates, DIM)
    np.testing.assert_array_equal(sub, fedsubavg(updates, DIM, max_correction=math.inf)[1])
    _, capped = fedsubavg(updates, DIM, max_correction=cap)
    total = sum(u.num_samples for u in updates)
    for k, item in enumerate(ids.tolist()):
        held = [(u, list(u.item_ids).index(item)) for u in updates if item in u.item_ids]
        weight = sum(float(u.row_counts[j]) for u, j in held)
        step = sum(float(u.row_counts[j]) * u.row_deltas[j] for u, j in held)
        if weight >= total / cap:  # a row held widely enough keeps its FedSubAvg step
            np.testing.assert_allclose(capped[k], sub[k], rtol=1e-5, atol=1e-6)
        else:  # a rare row moves at most cap × its plain-average step, in the same direction
            np.testing.assert_allclose(capped[k], step * cap / total, rtol=1e-4, atol=1e-6)
            assert np.linalg.norm(capped[k]) <= np.linalg.norm(sub[k]) + 1e-6
