"""Defences for rows few devices hold: the contributor floor counts trainers, the row-step bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_service.build import build_defences
from cloud_service.federated.defences import Defences, aggregate
from cloud_service.federated.robust import bound_row_steps, rows_with_contributors
from cloud_service.settings import FederatedSettings
from tandem_core.federated.update import ModelUpdate

pytestmark = pytest.mark.unit
DIM = 2


def push(device: str, ids: list[int], rows: list[list[float]], counts: list[int]) -> ModelUpdate:
    return ModelUpdate(
        device, np.array(ids, np.int64), np.array(rows, np.float32), np.array(counts, np.int64),
        {}, max(counts),
    )  # fmt: skip


def test_a_decoy_is_no_contributor() -> None:
    a = push("a", [3, 4], [[0.1, 0.1], [0.2, 0.2]], [2, 1])
    b = push("b", [3, 4], [[0.0, 0.0], [0.3, 0.3]], [0, 5])  # row 3 only a decoy here
    keep = rows_with_contributors([a, b], np.array([3, 4]), minimum=2)
    assert keep.tolist() == [False, True]


def test_the_row_step_bound_scales_only_steps_above_it() -> None:
    delta = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.6, 0.8], [30.0, 40.0]], np.float32)
    out = bound_row_steps(delta, factor=2.0)  # median over the moved rows: 1 → bound 2
    np.testing.assert_array_equal(out[:4], delta[:4])
    np.testing.assert_allclose(out[4], [1.2, 1.6], rtol=1e-6)


@given(st.lists(st.floats(-5, 5), min_size=2 * DIM, max_size=12 * DIM), st.floats(0.1, 4))
def test_no_bounded_row_step_exceeds_the_bound(values: list[float], factor: float) -> None:
    delta = np.array(values[: len(values) // DIM * DIM], np.float32).reshape(-1, DIM)
    norms = np.linalg.norm(delta.astype(np.float64), axis=1)
    if not (norms > 0).any():
        return
    bound = factor * float(np.median(norms[norms > 0]))
    out_norms = np.linalg.norm(bound_row_steps(delta, factor).astype(np.float64), axis=1)
    assert (out_norms <= bound * (1 + 1e-5)).all()
    assert np.allclose(out_norms[norms <= bound], norms[norms <= bound], rtol=1e-5)


def test_colluders_alone_on_a_row_move_it_at_most_the_bound() -> None:
    """Six colluders push +1.0 on row 9 that nobody else trains; honest devices move rows 0-5
    by ~0.01. FedSubAvg hands row 9 the colluders' +1.0; with the bound it moves ≤ 1 × the
    round's median row step."""
    honest = [push(f"h{k}", [k], [[0.01, 0.0]], [3]) for k in range(6)]
    bad = [push(f"x{k}", [9], [[0.0, 1.0]], [50]) for k in range(6)]
    ids, delta, _ = aggregate(honest + bad, DIM, Defences())
    assert delta[ids.tolist().index(9)].tolist() == [0.0, 1.0]
    ids, delta, _ = aggregate(honest + bad, DIM, Defences(max_row_step=1.0))
    np.testing.assert_allclose(delta[ids.tolist().index(9)], [0.0, 0.01], rtol=1e-5)
    np.testing.assert_allclose(delta[: len(honest)], [[0.01, 0.0]] * 6, rtol=1e-6)


def test_the_settings_carry_the_cold_row_defences() -> None:
    d = build_defences(FederatedSettings(max_row_step=3.0, min_contributors=2))
    assert (d.max_row_step, d.min_contributors) == (3.0, 2)


def test_the_share_floor_scales_with_the_round() -> None:
    """A floor of 1/6 of the round's devices: 2 of 12 pushers may move a row, 1 may not."""
    others = [push(f"o{k}", [k], [[0.01, 0.0]], [1]) for k in range(10)]
    two = [push(f"t{k}", [20], [[0.5, 0.5]], [1]) for k in range(2)]
    ids, _, _ = aggregate(others + two, DIM, Defences(min_contributor_share=1 / 6))
    assert 20 in ids.tolist() and 0 not in ids.tolist()
    ids, _, _ = aggregate(others[:5], DIM, Defences(min_contributor_share=1 / 6))
    assert ids.tolist() == [0, 1, 2, 3, 4]  # ceil(5 / 6) = 1: tiny rounds keep single holders
