"""DIN ranker: shapes, ESMM consistency, a training smoke test and artifact integrity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from simulator.pipeline import build_experiment
from simulator.world import WorldConfig
from tandem_core.artifacts import ArtifactIntegrityError
from tandem_core.models.din import DinConfig, DinRanker, esmm_loss
from training.ranker.artifacts import load_ranker, save_ranker
from training.ranker.scoring import DinScorer, rank
from training.ranker.train import TrainConfig, train_ranker

pytestmark = pytest.mark.unit


def _model() -> DinRanker:
    torch.manual_seed(0)
    return DinRanker(DinConfig(n_items=50, n_categories=5), torch.arange(50) % 5)


def test_shapes_and_esmm_consistency() -> None:
    model = _model().eval()
    history = torch.tensor([[-1, -1, 3, 4], [1, 2, 3, 4]])
    candidates = torch.tensor([[5, 6, 7], [8, 9, -1]])
    p_ctr, p_ctcvr = model(history, candidates)
    assert p_ctr.shape == p_ctcvr.shape == (2, 3)
    assert torch.all(p_ctcvr <= p_ctr) and torch.all(p_ctcvr >= 0)


def test_padding_in_history_changes_nothing() -> None:
    model = _model().eval()
    short = torch.tensor([[3, 4]])
    padded = torch.tensor([[-1, -1, -1, 3, 4]])
    cands = torch.tensor([[7, 8]])
    torch.testing.assert_close(model(short, cands)[0], model(padded, cands)[0])


def test_loss_is_finite_and_has_gradients() -> None:
    model = _model()
    loss = esmm_loss(
        model, torch.tensor([[1, 2]]), torch.tensor([[3]]), torch.tensor([[0]]),
        torch.tensor([[1.0]]), torch.tensor([[0.0]]),
    )  # fmt: skip
    loss.backward()
    assert torch.isfinite(loss)
    assert model.item_embedding.weight.grad is not None


def test_training_smoke_reload_and_tamper(tmp_path: Path) -> None:
    exp = build_experiment(WorldConfig(n_users=120, n_items=2500, n_categories=10, seed=1))
    model, fit = train_ranker(exp, TrainConfig(epochs=2, patience=5, batch_size=512))
    losses = [e["train_loss"] for e in fit["epochs"]]
    assert losses[-1] < losses[0]
    manifest = save_ranker(tmp_path, model, {"note": "smoke"})
    assert manifest.embedding_version.startswith("emb-")
    reloaded, again = load_ranker(tmp_path)
    assert again.version == manifest.version
    hist = exp.held_out.test_history[:16]
    items = exp.held_out.split.test.item[:16, None]
    np.testing.assert_allclose(rank(model, hist, items)[0], rank(reloaded, hist, items)[0])
    scores = DinScorer(reloaded).score(np.zeros(1), hist[:1], np.array([[1, 2, -1]]))
    assert scores[0, 2] == -np.inf
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError):
        load_ranker(tmp_path)
