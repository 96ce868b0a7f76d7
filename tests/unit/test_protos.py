"""The generated code is fresh, and arrays survive the trip through the wire types."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protos.generate import GENERATED_SUFFIXES, PROTO_DIR, stale_files
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


def test_check_names_edited_and_missing_files(tmp_path: Path) -> None:
    for path in PROTO_DIR.iterdir():
        if path.name.endswith(GENERATED_SUFFIXES):
            shutil.copyfile(path, tmp_path / path.name)
    (tmp_path / "tandem_pb2.py").write_text("# edited by hand\n")
    (tmp_path / "tandem_pb2_grpc.pyi").unlink()
    assert stale_files(tmp_path) == ["tandem_pb2.py", "tandem_pb2_grpc.pyi"]


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
    with pytest.raises(ValueError, match="expected 24 bytes, got 20"):
        matrix_from_proto(pb.Matrix(rows=2, cols=3, data=b"\x00" * 20))
    with pytest.raises(ValueError, match="expected 24 bytes, got 28"):
        tensor_from_proto(pb.NamedTensor(name="w", shape=[2, 3], data=b"\x00" * 28))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    vals = np.array([1.0, bad, 2.0, 3.0], dtype=np.float32)
    with pytest.raises(ValueError, match="NaN or infinite"):
        vector_from_proto(pb.Vector(dim=4, data=vals.tobytes()))
    with pytest.raises(ValueError, match="NaN or infinite"):
        matrix_from_proto(pb.Matrix(rows=2, cols=2, data=vals.tobytes()))
    with pytest.raises(ValueError, match="NaN or infinite"):
        tensor_from_proto(pb.NamedTensor(name="w", shape=[4], data=vals.tobytes()))


def test_oversized_is_rejected_before_decoding() -> None:
    with pytest.raises(ValueError, match="more than the limit"):
        matrix_from_proto(pb.Matrix(rows=1000, cols=1000, data=b""), max_floats=1000)
    with pytest.raises(ValueError, match="more than the limit"):
        vector_from_proto(pb.Vector(dim=1001, data=b"\x00" * 4004), max_floats=1000)
    with pytest.raises(ValueError, match="more than the limit"):  # the default: 1 << 20 floats
        vector_from_proto(pb.Vector(dim=(1 << 20) + 1, data=b""))


def test_forged_tensor_shape_does_not_wrap_around() -> None:
    # 65536**4 = 2**64 is 0 in int64 arithmetic; the count must stay exact.
    forged = pb.NamedTensor(name="w", shape=[65536] * 4, data=b"")
    with pytest.raises(ValueError, match="more than the limit"):
        tensor_from_proto(forged)


def test_decoded_arrays_are_writable_copies() -> None:
    back = vector_from_proto(vector_to_proto(np.arange(3, dtype=np.float32)))
    back[0] = 7.0  # a view of the message bytes would be read-only
    assert back.dtype == np.float32


def test_wrong_rank_is_rejected_on_encode() -> None:
    with pytest.raises(ValueError, match="1-D"):
        vector_to_proto(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        matrix_to_proto(np.zeros(3, dtype=np.float32))


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
