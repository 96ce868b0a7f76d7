"""Contribution scores: first-order and Fisher-preconditioned influence, exclusion, the codec."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_service.federated.contribution import (
    InvalidSignal,
    ValidationSignal,
    decode_signal,
    encode_signal,
    exclude_lowest,
    lowest,
    scores,
)
from tandem_core.federated.update import ModelUpdate

DIM = 3


def signal(seed: int = 0, fisher: float | None = None, damping: float = 0.1) -> ValidationSignal:
    rng = np.random.default_rng(seed)
    ids = np.array([2, 5, 9])
    shape = (ids.size, DIM)
    f_rows = np.full(shape, fisher) if fisher is not None else rng.uniform(0, 2, shape)
    f_w = np.full((2, 2), fisher) if fisher is not None else rng.uniform(0, 2, (2, 2))
    return ValidationSignal(
        4, ids, rng.normal(size=shape), f_rows, {"w": rng.normal(size=(2, 2))}, {"w": f_w},
        damping, 100,
    )  # fmt: skip


def update(
    device: str, ids: list[int], rows: np.ndarray, w: np.ndarray | None = None
) -> ModelUpdate:
    dense = {} if w is None else {"w": w}
    return ModelUpdate(device, np.array(ids), rows, np.ones(len(ids)), dense)


def along(sig: ValidationSignal, sign: float, device: str) -> ModelUpdate:
    """An update of every signal row and the dense layer, along sign × the gradient."""
    return update(device, sig.row_ids.tolist(), sign * sig.row_grad, sign * sig.dense_grad["w"])


@pytest.mark.parametrize("mode", ["first_order", "fisher"])
def test_a_step_down_the_gradient_scores_above_one_up_it(mode: str) -> None:
    sig = signal()
    down, up = along(sig, -0.1, "down"), along(sig, 0.1, "up")
    got = scores([down, up], sig, mode)  # type: ignore[arg-type]
    assert got[0] > 0 > got[1]
    want = 0.1 * (np.sum(sig.row_grad**2) + np.sum(sig.dense_grad["w"] ** 2))
    if mode == "first_order":
        assert got[0] == pytest.approx(want) and got[1] == pytest.approx(-want)


def test_rows_and_layers_the_signal_lacks_score_zero() -> None:
    sig = signal()
    other = update("x", [3, 7], np.ones((2, DIM)))
    other = ModelUpdate("x", other.item_ids, other.row_deltas, other.row_counts, {"v": np.ones(4)})
    assert scores([other], sig, "first_order")[0] == 0.0
    mixed = update("m", [3, 5], np.stack([np.ones(DIM), np.ones(DIM)]))
    assert scores([mixed], sig, "first_order")[0] == pytest.approx(-sig.row_grad[1].sum())


@given(f=st.floats(0.0, 50.0), lam=st.floats(1e-4, 5.0), seed=st.integers(0, 200))
@settings(max_examples=40, deadline=None)
def test_fisher_mode_equals_first_order_when_the_fisher_is_constant(
    f: float, lam: float, seed: int
) -> None:
    sig = signal(seed, fisher=f, damping=lam)
    rng = np.random.default_rng(seed + 1)
    ups = [
        update(f"d{k}", [2, 9, 11], rng.normal(size=(3, DIM)), rng.normal(size=(2, 2)))
        for k in range(4)
    ]
    np.testing.assert_allclose(
        scores(ups, sig, "fisher"), scores(ups, sig, "first_order"), rtol=1e-9, atol=1e-12
    )


def test_fisher_mode_discounts_high_curvature_coordinates() -> None:
    """Two updates with equal first-order score; the one on the flat coordinate wins."""
    sig = ValidationSignal(0, np.array([1, 2]), np.ones((2, 1)), np.array([[10.0], [0.0]]),
                           damping=0.1)  # fmt: skip
    sharp, flat = update("sharp", [1], -np.ones((1, 1))), update("flat", [2], -np.ones((1, 1)))
    first = scores([sharp, flat], sig, "first_order")
    fisher = scores([sharp, flat], sig, "fisher")
    assert first[0] == first[1] == 1.0
    assert fisher[1] > fisher[0] > 0


def test_a_non_finite_update_scores_nan_and_a_shape_mismatch_is_refused() -> None:
    sig = signal()
    bad = update("bad", [2], np.full((1, DIM), np.inf))
    assert math.isnan(scores([bad], sig, "first_order")[0])
    with pytest.raises(InvalidSignal):
        scores([update("w", [2], np.ones((1, DIM + 1)))], sig, "first_order")
    with pytest.raises(InvalidSignal):
        scores([update("d", [2], np.ones((1, DIM)), np.ones((3, 2)))], sig, "fisher")


def test_exclude_lowest_drops_the_lowest_share_and_never_empties() -> None:
    ups = [update(f"d{k}", [2], np.ones((1, DIM))) for k in range(10)]
    s = np.array([0.5, -3.0, 2.0, math.nan, 1.0, 0.1, 0.2, 0.3, 0.4, 0.6])
    assert [u.device_id for u in exclude_lowest(ups, s, 0.0)] == [u.device_id for u in ups]
    kept = exclude_lowest(ups, s, 0.2)  # 2 of 10: the NaN and −3
    assert [u.device_id for u in kept] == ["d0", "d2", "d4", "d5", "d6", "d7", "d8", "d9"]
    assert lowest(s, 0.1).tolist() == [3]  # NaN counts as lowest
    assert lowest(s, 0.29).tolist() == [1, 3]  # ⌊2.9⌋ = 2
    assert lowest(s, 0.3).tolist() == [1, 3, 5]
    assert [u.device_id for u in exclude_lowest(ups[:1], s[:1], 0.5)] == ["d0"]  # keeps one
    assert len(exclude_lowest(ups[:2], s[:2], 0.5)) == 1
    assert exclude_lowest([], np.zeros(0), 0.5) == []
    ties = np.zeros(4)
    assert lowest(ties, 0.5).tolist() == [0, 1]  # ties: the earlier first


@given(n=st.integers(1, 40), share=st.floats(0.0, 0.5), seed=st.integers(0, 100))
@settings(max_examples=60, deadline=None)
def test_exclusion_keeps_every_score_above_every_dropped_one(
    n: int, share: float, seed: int
) -> None:
    s = np.random.default_rng(seed).normal(size=n)
    drop = lowest(s, share)
    assert len(drop) == min(math.floor(share * n + 1e-9), n - 1)
    kept = np.delete(s, drop)
    assert len(kept) >= 1
    if len(drop):
        assert s[drop].max() <= kept.min()


def test_the_signal_round_trips_and_a_bad_one_is_refused() -> None:
    sig = signal(3)
    got = decode_signal(encode_signal(sig))
    assert (got.version, got.damping, got.examples) == (4, 0.1, 100)
    np.testing.assert_array_equal(got.row_ids, sig.row_ids)
    np.testing.assert_allclose(got.row_grad, sig.row_grad, rtol=1e-6)
    np.testing.assert_allclose(got.dense_fisher["w"], sig.dense_fisher["w"], rtol=1e-6)
    for payload in (b"not a signal", b"", encode_signal(signal(damping=0.0))):
        with pytest.raises(InvalidSignal):
            decode_signal(payload)
    negative = signal()
    negative.row_fisher[0, 0] = -1.0
    unsorted = ValidationSignal(0, np.array([5, 2]), np.zeros((2, DIM)), np.zeros((2, DIM)))
    nan_grad = signal()
    nan_grad.dense_grad["w"][0, 0] = np.nan
    for bad in (negative, unsorted, nan_grad):
        with pytest.raises(InvalidSignal):
            decode_signal(encode_signal(bad))
