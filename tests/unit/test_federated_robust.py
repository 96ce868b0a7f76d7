"""Issue 15's rules: push validation bounding one device, robust rows, row clipping, finiteness."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_service.build import build_defences, build_round_config
from cloud_service.federated.defences import Defences, aggregate, is_finite
from cloud_service.federated.robust import clip_rows, clip_rows_to_median, robust_rows
from cloud_service.settings import FederatedSettings
from cloud_service.store.federated_state import NonFiniteModel, applied
from tandem_core.federated.update import InvalidUpdate, ModelUpdate, UpdateLimits, check

pytestmark = pytest.mark.unit
DIM = 3
LIMITS = UpdateLimits(
    n_items=100, dim=DIM, dense_shapes={"w": (2,)}, max_rows=10, max_samples=1000,
    max_row_norm=10.0, max_update_norm=100.0,
)  # fmt: skip


def push(rows: list[list[float]] | None = None, dense: float = 0.1, n: int = 5) -> ModelUpdate:
    rows = rows if rows is not None else [[0.1, 0.0, -0.1], [0.0, 0.2, 0.0]]
    return ModelUpdate(
        "d1", np.arange(len(rows), dtype=np.int64), np.array(rows, np.float32).reshape(-1, DIM),
        np.full(len(rows), min(n, 3), np.int64), {"w": np.full(2, dense, np.float32)}, n,
        update_id="u-1",
    )  # fmt: skip


def test_an_honest_push_passes() -> None:
    check(push(), LIMITS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["rows", "dense"])
def test_a_non_finite_value_anywhere_is_refused(bad: float, where: str) -> None:
    u = push([[0.1, bad, 0.0]]) if where == "rows" else push(dense=bad)
    with pytest.raises(InvalidUpdate, match="NaN or infinite"):
        check(u, LIMITS)


def test_a_huge_finite_row_is_refused_by_the_row_bound() -> None:
    with pytest.raises(InvalidUpdate, match="row delta of item 1"):
        check(push([[0.1, 0.0, 0.0], [3e38, 0.0, 0.0]]), LIMITS)
    check(push([[0.1, 0.0, 0.0], [9.9, 0.0, 0.0]]), LIMITS)  # just under the bound


def test_the_whole_update_norm_is_bounded() -> None:
    spread = [[5.0, 5.0, 5.0]] * 10  # every row within 10 (8.66), the update 27.4
    check(push(spread), LIMITS)
    with pytest.raises(InvalidUpdate, match="update L2 norm"):
        check(push(spread), replace(LIMITS, max_update_norm=20.0))
    with pytest.raises(InvalidUpdate, match="update L2 norm"):
        check(push(dense=80.0), LIMITS)  # the dense layers count too (113 > 100)


def test_num_samples_is_bounded() -> None:
    check(push(n=1000), LIMITS)
    with pytest.raises(InvalidUpdate, match="num_samples 1000000 above"):
        check(push(n=10**6), LIMITS)


def test_the_deployed_defaults_bound_and_clip() -> None:
    fl = FederatedSettings()
    cfg, d = build_round_config(fl), build_defences(fl)
    assert cfg.max_row_norm > 0 and cfg.max_update_norm > 0 and cfg.max_samples > 0
    assert d.clip_median  # server-side clipping is on unless switched off


def test_the_bounds_read_only_the_push() -> None:
    """The verdict on a push is a function of the push and the limits: nothing a device pushed
    before (or the model's current values) can make an honest push fail."""
    honest = push()
    for _ in range(3):
        with pytest.raises(InvalidUpdate):
            check(push([[3e38, 0, 0]]), LIMITS)
        check(honest, LIMITS)


def holder(
    device: str, ids: list[int], rows: np.ndarray, counts: list[int] | None = None
) -> ModelUpdate:
    return ModelUpdate(
        device, np.array(ids, np.int64), np.asarray(rows, np.float32).reshape(len(ids), DIM),
        np.array(counts or [1] * len(ids), np.int64), {}, max(counts or [1]),
    )  # fmt: skip


values = st.floats(-5, 5, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    honest=st.lists(st.lists(values, min_size=DIM, max_size=DIM), min_size=8, max_size=20),
    bad=st.floats(-1e30, 1e30, allow_nan=False),
    rule=st.sampled_from(["median", "trimmed_mean"]),
)
def test_a_minority_of_outliers_cannot_push_a_row_outside_the_honest_range(
    honest: list[list[float]], bad: float, rule: str
) -> None:
    """With fewer attackers than the trimmed share (or than half, for the median), each robust
    coordinate stays within the honest holders' range, however far the attackers push."""
    n_bad = max(1, len(honest) // 10) if rule == "trimmed_mean" else len(honest) // 2 - 1
    ups = [holder(f"h{i}", [4], np.array([r])) for i, r in enumerate(honest)]
    ups += [holder(f"x{i}", [4], np.full((1, DIM), bad)) for i in range(n_bad)]
    trim = (n_bad + 1) / (len(ups)) if rule == "trimmed_mean" else 0.0
    ids, delta = robust_rows(ups, DIM, rule, trim=min(trim, 0.49))
    lo, hi = np.min(honest, axis=0), np.max(honest, axis=0)
    assert ids.tolist() == [4]
    assert np.all(delta[0] >= lo - 1e-5) and np.all(delta[0] <= hi + 1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), rule=st.sampled_from(["median", "trimmed_mean"]))
def test_robust_rows_do_not_depend_on_device_order_and_one_holder_is_its_own_value(
    seed: int, rule: str
) -> None:
    rng = np.random.default_rng(seed)
    ups = [holder(f"d{i}", [0, 1 + i % 3], rng.normal(size=(2, DIM))) for i in range(7)]
    ids, delta = robust_rows(ups, DIM, rule, trim=0.2)
    ids_r, delta_r = robust_rows(ups[::-1], DIM, rule, trim=0.2)
    np.testing.assert_array_equal(ids, ids_r)
    np.testing.assert_allclose(delta, delta_r, rtol=1e-6)
    lone = [holder("solo", [9], rng.normal(size=(1, DIM)))]
    np.testing.assert_allclose(robust_rows(lone, DIM, rule, 0.2)[1], lone[0].row_deltas)


def test_robust_rows_leave_out_decoys_and_ignore_claimed_counts() -> None:
    a = holder("a", [0, 5], np.array([[1.0] * DIM, [0.0] * DIM]), counts=[1, 0])  # 5: a decoy
    b = holder("b", [0, 5], np.array([[2.0] * DIM, [4.0] * DIM]), counts=[1000, 1])
    c = holder("c", [0], np.array([[3.0] * DIM]))
    ids, delta = robust_rows([a, b, c], DIM, "median")
    assert ids.tolist() == [0, 5]
    np.testing.assert_allclose(delta, [[2.0] * DIM, [4.0] * DIM])  # not pulled to 0 by a's decoy


def test_row_aggregator_is_selectable_beside_fedsubavg() -> None:
    honest = [holder(f"h{i}", [0], np.full((1, DIM), 0.1)) for i in range(9)]
    evil = holder("evil", [0], np.full((1, DIM), -50.0), counts=[1])
    _, mean, _ = aggregate([*honest, evil], DIM, Defences())
    _, med, _ = aggregate([*honest, evil], DIM, Defences(row_aggregator="median"))
    _, trim, _ = aggregate([*honest, evil], DIM, Defences(row_aggregator="trimmed_mean", trim=0.1))
    assert mean[0, 0] < -4
    assert med[0, 0] == pytest.approx(0.1) and trim[0, 0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="row_aggregator"):
        Defences(row_aggregator="mode")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 1000), bound=st.floats(0.01, 5.0))
def test_row_clipping_bounds_every_row_and_keeps_its_direction(seed: int, bound: float) -> None:
    rng = np.random.default_rng(seed)
    u = holder("d", [0, 1, 2], rng.normal(scale=3.0, size=(3, DIM)))
    c = clip_rows(u, bound)
    norms = np.linalg.norm(c.row_deltas, axis=1)
    assert np.all(norms <= bound * (1 + 1e-5))
    before = u.row_deltas / np.linalg.norm(u.row_deltas, axis=1, keepdims=True)
    np.testing.assert_allclose(c.row_deltas / norms[:, None], before, atol=1e-5)


def test_row_median_clipping_bounds_a_backdoor_row_to_an_honest_size() -> None:
    honest = [holder(f"h{i}", [0, 1], np.full((2, DIM), 0.01 * (i + 1))) for i in range(9)]
    backdoor = holder("evil", [0, 7], np.array([[0.01] * DIM, [0.0, 0.0, 1.0]]))
    clipped = clip_rows_to_median([*honest, backdoor])
    median = 0.05 * np.sqrt(3)  # the 10th and 11th of the 20 row norms
    assert np.linalg.norm(clipped[-1].row_deltas[1]) == pytest.approx(median, rel=1e-5)
    np.testing.assert_array_equal(clipped[0].row_deltas, honest[0].row_deltas)  # small: as is


def test_a_non_finite_aggregate_or_model_is_caught() -> None:
    assert is_finite(np.zeros((2, DIM)), {"w": np.ones(2)})
    assert not is_finite(np.array([[np.nan, 0, 0]]), {})
    assert not is_finite(np.zeros((1, DIM)), {"w": np.array([np.inf])})
    np.testing.assert_array_equal(applied(np.ones(2, np.float32), np.ones(2)), [2.0, 2.0])
    with pytest.raises(NonFiniteModel):  # each finite, their float32 sum is not
        applied(np.full(2, 3e38, np.float32), np.full(2, 3e38))


def test_a_push_of_dense_layers_only_passes() -> None:
    u = replace(push([]), row_deltas=np.zeros(0, np.float32), row_counts=np.zeros(0, np.int64))
    check(u, LIMITS)
