"""The exported serving bundle scores exactly as the torch ranker and refuses tampered files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cloud_service.recommender.retrieval import RetrievalConfig
from cloud_service.recommender.serving import OnlineRecommender
from cloud_service.registry.bundle import load_bundle
from simulator.logs import Impressions
from tandem_core.artifacts import TABLES, ArtifactIntegrityError
from tandem_core.models.din import DinConfig, DinRanker
from training.ranker.bundle import co_click_graph, write_bundle
from training.ranker.scoring import rank

pytestmark = pytest.mark.unit
N_ITEMS = 300


def _impressions() -> Impressions:
    rng = np.random.default_rng(0)
    n = 2000
    cols = {
        "session": rng.integers(0, 100, n), "user": rng.integers(0, 50, n),
        "step": rng.integers(0, 10, n), "position": rng.integers(0, 4, n),
        "item": rng.integers(0, N_ITEMS, n), "category": rng.integers(0, 6, n),
        "click": rng.random(n) < 0.3, "purchase": rng.random(n) < 0.05,
        "timestamp": np.arange(n), "intent": rng.integers(0, 6, n),
    }  # fmt: skip
    return Impressions(**cols)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DinRanker]:
    torch.manual_seed(0)
    model = DinRanker(DinConfig(N_ITEMS, 6), torch.arange(N_ITEMS) % 6).eval()
    with torch.no_grad():  # non-zero biases so the ONNX graph has every term to get right
        model.item_bias.weight.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("bundle")
    write_bundle(out, model, _impressions(), "din-test", "emb-test", history_len=10)
    return out, model


def test_onnx_scores_match_torch(bundle_dir: tuple[Path, DinRanker]) -> None:
    path, model = bundle_dir
    online = OnlineRecommender(load_bundle(path), RetrievalConfig())
    clicked = np.array([4, 17, 250])
    candidates = np.arange(0, N_ITEMS, 7)
    scored = online.rank(clicked, candidates)
    history = np.full((1, 10), -1)  # the full left-padded window the model was trained on
    history[0, -3:] = clicked
    assert online.history(clicked).shape == (1, 3)
    ctr, ctcvr = rank(model, history, candidates[None, :])
    expected = ctr[0] + ctcvr[0]
    order = np.argsort(-expected, kind="stable")
    np.testing.assert_allclose(scored.score, expected[order], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scored.item_ids, candidates[order])


def test_co_click_graph_is_symmetric_without_self_links() -> None:
    co = co_click_graph(_impressions(), N_ITEMS)
    assert (co - co.T).nnz == 0 and co.diagonal().sum() == 0 and co.nnz > 0


def test_a_tampered_table_is_refused(bundle_dir: tuple[Path, DinRanker], tmp_path: Path) -> None:
    path, _ = bundle_dir
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    data = bytearray((tmp_path / TABLES).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / TABLES).write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=TABLES):
        load_bundle(tmp_path)


def test_empty_history_scores_as_an_all_padding_window(bundle_dir: tuple[Path, DinRanker]) -> None:
    path, model = bundle_dir
    online = OnlineRecommender(load_bundle(path), RetrievalConfig())
    candidates = np.arange(0, N_ITEMS, 11)
    scored = online.rank(np.array([], dtype=np.int64), candidates)
    ctr, ctcvr = rank(model, np.full((1, 10), -1), candidates[None, :])
    np.testing.assert_allclose(np.sort(scored.score), np.sort(ctr[0] + ctcvr[0]), rtol=1e-5)
