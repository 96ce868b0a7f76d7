"""The agent feeds the re-ranker exactly what training fed it: same padded window, same logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from device_agent.inference.reranker import OnnxReranker
from device_agent.policy.features import SessionView
from device_agent.policy.pacing import Allowance
from device_agent.session.state import DeviceSession, Pool
from simulator.logs import Impressions, Steps
from tandem_core.behavior import PAD, pad_behavior
from tandem_core.models.edgerec import EdgeRecConfig, EdgeReranker
from training.reranker.data import step_examples
from training.reranker.train import BEHAVIOR_LEN, batch_tensors, export_onnx
from training.tiny import ArtifactDirs

pytestmark = pytest.mark.unit
PAGE = 4


def one_session(n_steps: int, n_items: int, seed: int) -> tuple[Impressions, Steps, np.ndarray]:
    """A logged session of `n_steps` pages of PAGE items with random clicks and purchases."""
    rng = np.random.default_rng(seed)
    n = n_steps * PAGE
    click = rng.random(n) < 0.4
    zeros = np.zeros(n, np.int64)
    imp = Impressions(
        session=zeros, user=zeros, step=np.repeat(np.arange(n_steps), PAGE),
        position=np.tile(np.arange(PAGE), n_steps), item=rng.choice(n_items, n, replace=False),
        category=zeros, click=click, purchase=click & (rng.random(n) < 0.5),
        timestamp=np.arange(n, dtype=np.int64) * 1000, intent=zeros,
    )  # fmt: skip
    z = np.zeros(n_steps, np.int64)
    steps = Steps(
        session=z, user=z, step=np.arange(n_steps), timestamp=z, refreshed=z.astype(bool),
        switched=z.astype(bool), intent=z, pool_intent=z, reward=z.astype(float),
        expected_reward=z.astype(float),
    )  # fmt: skip
    return imp, steps, rng.normal(size=n).astype(np.float32)


def agent_session(
    imp: Impressions, rows: np.ndarray, step: int, score: np.ndarray
) -> DeviceSession:
    """The agent's session after the app reported every event before `step`, holding the
    step's page as its pool."""
    s = DeviceSession(
        "d", SessionView(n_categories=4, pool_size=64, page_size=PAGE),
        Allowance(budget=0.1, burst=2.0), behavior_len=BEHAVIOR_LEN,
    )  # fmt: skip
    s.set_pool(Pool(imp.item, imp.category, score, rows[imp.item], "emb-1"))  # rows known
    for r in np.flatnonzero(imp.step < step):
        action = 2 if imp.purchase[r] else 1 if imp.click[r] else 0
        s.record_event(int(imp.item[r]), action, int(imp.timestamp[r]))
    page = np.flatnonzero(imp.step == step)
    s.set_pool(Pool(imp.item[page], imp.category[page], score[page], rows[imp.item[page]], "emb-1"))
    return s


def test_pad_behavior_keeps_the_latest_events_on_the_right() -> None:
    items, actions = pad_behavior([5, 6, 7], [0, 1, 2], 5)
    assert items.tolist() == [PAD, PAD, 5, 6, 7] and actions.tolist() == [PAD, PAD, 0, 1, 2]
    items, _ = pad_behavior(list(range(40)), [0] * 40, 30)
    assert items.tolist() == list(range(10, 40))


@pytest.mark.parametrize("n_steps", [3, 12])  # 8 events (padded) and 44 (cut to the last 30)
def test_agent_inputs_and_logits_equal_the_training_pipeline(
    tiny_artifacts: ArtifactDirs, tmp_path: Path, n_steps: int
) -> None:
    torch.manual_seed(0)
    dim, n_items = tiny_artifacts.dim, tiny_artifacts.n_items
    rows = np.random.default_rng(1).normal(size=(n_items, dim)).astype(np.float32)
    imp, steps, score = one_session(n_steps, n_items, seed=n_steps)
    ex = step_examples(imp, score, steps, BEHAVIOR_LEN, PAGE)
    last = len(ex) - 1  # the step with the most behaviour before it
    trained = batch_tensors(ex, rows, np.array([last]))
    session = agent_session(imp, rows, n_steps - 1, score)

    agent = session.reranker_inputs()
    assert agent is not None
    for got, want in zip(agent, trained, strict=True):
        np.testing.assert_array_equal(got, want.numpy())

    model = EdgeReranker(EdgeRecConfig(dim=dim)).eval()
    export_onnx(model, tmp_path / "m.onnx")
    onnx_model = OnnxReranker((tmp_path / "m.onnx").read_bytes(), "v")
    with torch.inference_mode():
        torch_logits = model(*trained).numpy()
    np.testing.assert_allclose(onnx_model.score(*agent), torch_logits, atol=1e-5)

    # the window the agent used to pass (events only, no padding) scores differently
    n = min(n_steps - 1, BEHAVIOR_LEN // PAGE) * PAGE
    unpadded = (agent[0][:, -n:], agent[1][:, -n:], agent[2], agent[3])
    if n < BEHAVIOR_LEN:
        assert not np.allclose(onnx_model.score(*unpadded), torch_logits, atol=1e-6)
