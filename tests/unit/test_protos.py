"""The generated code is fresh, and arrays survive the trip through the wire types."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protos.generate import stale_files
from protos.tandem.v1 import tandem_pb2 as pb
from protos.vectors import (
    matrix_from_proto,
    matrix_to_proto,
    tensor_from_proto,
    tensor_to_proto,
    vector_from_proto,
    vector_to_proto,
)

pytestmark = pytest.mark.unit

finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


def test_generated_code_matches_the_proto() -> None:
    assert stale_files() == []


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=20), elements=finite32)
)
def test_matrix_round_trip(mat: np.ndarray) -> None:
    wire = pb.Matrix.FromString(matrix_to_proto(mat).SerializeToString())
    np.testing.assert_array_equal(matrix_from_proto(wire), mat)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, st.integers(0, 64), elements=finite32))
def test_vector_round_trip(vec: np.ndarray) -> None:
    np.testing.assert_array_equal(vector_from_proto(vector_to_proto(vec)), vec)


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6), elements=finite32)
)
def test_tensor_round_trip(arr: np.ndarray) -> None:
    name, back = tensor_from_proto(tensor_to_proto("layer.weight", arr))
    assert name == "layer.weight"
    np.testing.assert_array_equal(back, arr)


def test_wrong_byte_length_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected 16 bytes, got 12"):
        vector_from_proto(pb.Vector(dim=4, data=b"\x00" * 12))
    with pytest.raises(ValueError, match="expected 24 bytes"):
        matrix_from_proto(pb.Matrix(rows=2, cols=3, data=b"\x00" * 20))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    vec = np.array([1.0, bad], dtype=np.float32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        vector_from_proto(pb.Vector(dim=2, data=vec.tobytes()))


def test_oversized_is_rejected_before_decoding() -> None:
    with pytest.raises(ValueError, match="more than the limit"):
        matrix_from_proto(pb.Matrix(rows=1000, cols=1000, data=b""), max_floats=1000)


def test_recommend_request_round_trip() -> None:
    req = pb.RecommendRequest(
        device_id="d-1", k=20, model_version="emb-1",
        recent=[pb.Behavior(item_id=5, action=pb.CLICK, timestamp_ms=1)],
        interest=vector_to_proto(np.ones(8, dtype=np.float32)),
    )  # fmt: skip
    back = pb.RecommendRequest.FromString(req.SerializeToString())
    assert back == req
    assert back.recent[0].action == pb.CLICK
    np.testing.assert_array_equal(vector_from_proto(back.interest), np.ones(8))
