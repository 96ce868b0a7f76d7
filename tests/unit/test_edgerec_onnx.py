"""The device re-ranker exports to ONNX and ONNX Runtime agrees with torch; tampering is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from device_agent.inference.reranker import ModelIntegrityError, OnnxReranker
from simulator.pipeline import build_experiment
from simulator.world import WorldConfig
from tandem_core.models.edgerec import EdgeRecConfig, EdgeReranker
from training.reranker.data import gather_rows, one_hot_actions, step_examples
from training.reranker.train import (
    DeviceTrainConfig,
    train_reranker,
    write_device_artifact,
)

pytestmark = pytest.mark.unit

PARITY_ATOL = 1e-4  # float32 kernels differ in summation order; observed gaps are ~1e-6


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[EdgeReranker, Path, dict]:
    exp = build_experiment(WorldConfig(n_users=80, n_items=1500, n_categories=8, seed=5))
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(1500, 12)).astype(np.float32)
    parts = [
        step_examples(p, rng.normal(size=len(p)).astype(np.float32), exp.traffic.steps, 10, 4)
        for p in exp.held_out.split
    ]
    model, log = train_reranker(parts[0], parts[1], rows, DeviceTrainConfig(epochs=1))
    assert np.isfinite(log[0]["train_loss"])
    out = tmp_path_factory.mktemp("device")
    manifest = write_device_artifact(out, model, "emb-test", {})
    return model, out, manifest


@pytest.mark.parametrize(("batch", "events", "items"), [(1, 30, 48), (3, 7, 5), (2, 1, 1)])
def test_onnx_matches_torch(artifact: tuple, batch: int, events: int, items: int) -> None:
    model, out, manifest = artifact
    reranker = OnnxReranker.from_file(out / manifest["file"], manifest["sha256"][manifest["file"]])
    rng = np.random.default_rng(batch)
    args = (
        rng.normal(size=(batch, events, 12)).astype(np.float32),
        np.eye(3, dtype=np.float32)[rng.integers(0, 3, (batch, events))],
        rng.normal(size=(batch, items, 12)).astype(np.float32),
        rng.normal(size=(batch, items)).astype(np.float32),
    )
    with torch.inference_mode():
        expected = model(*(torch.from_numpy(a) for a in args)).numpy()
    np.testing.assert_allclose(reranker.score(*args), expected, atol=PARITY_ATOL)


def test_padding_rows_and_actions_are_zero() -> None:
    """Contract: the device left-pads its events to the manifest's behavior_len, as in training
    (the GRU sees the padding, so an unpadded short sequence would score differently)."""
    rows = np.ones((10, 3), np.float32)
    emb = gather_rows(rows, np.array([[-1, 2]]))
    np.testing.assert_array_equal(emb[0, 0], 0.0)
    np.testing.assert_array_equal(emb[0, 1], 1.0)
    actions = one_hot_actions(np.array([[-1, 0, 2]]))
    np.testing.assert_array_equal(actions[0], [[0, 0, 0], [1, 0, 0], [0, 0, 1]])


def test_manifest_carries_version_and_embedding_version(artifact: tuple) -> None:
    _, out, _ = artifact
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["version"].startswith("edgerec-")
    assert on_disk["embedding_version"] == "emb-test"


def test_tampered_model_is_refused(artifact: tuple, tmp_path: Path) -> None:
    _, out, manifest = artifact
    data = bytearray((out / manifest["file"]).read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "reranker.onnx"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match"):
        OnnxReranker.from_file(bad, manifest["sha256"][manifest["file"]])


def test_untrained_model_is_deterministic_for_a_seed() -> None:
    torch.manual_seed(0)
    a = EdgeReranker(EdgeRecConfig(dim=4))
    torch.manual_seed(0)
    b = EdgeReranker(EdgeRecConfig(dim=4))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
