"""The validation signal (torch): its gradient, its Fisher, and scores that predict the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cloud_service.federated.contribution import decode_signal, encode_signal, scores
from tandem_core.federated.update import ModelUpdate
from tandem_core.models.din import (
    DinConfig,
    DinRanker,
    esmm_loss,
    federated_dense,
    federated_rows,
    ranker_from_federated,
)
from training.federated.contribution_signal import ValidationLog, compute_signal, signal_of_model

pytestmark = pytest.mark.unit
N_ITEMS = 40


def tiny_model(seed: int = 0) -> DinRanker:
    torch.manual_seed(seed)
    cfg = DinConfig(N_ITEMS, 4, item_dim=4, category_dim=2, attention_hidden=4,
                    tower_hidden=(6,), n_positions=3)  # fmt: skip
    model = DinRanker(cfg, torch.arange(N_ITEMS) % 4)
    with torch.no_grad():
        model.item_bias.weight.normal_(0, 0.3)  # not at zero, so bias gradients vary
    return model


def a_log(n: int = 24, seed: int = 0) -> ValidationLog:
    rng = np.random.default_rng(seed)
    history = rng.integers(0, 30, size=(n, 5))  # items 30..39 never in a history
    history[rng.random((n, 5)) < 0.3] = -1
    return ValidationLog(
        history, rng.integers(0, 35, n), rng.integers(0, 3, n), rng.integers(0, 2, n),
        rng.integers(0, 2, n),
    )  # fmt: skip


def loss_of(model: DinRanker, log: ValidationLog) -> torch.Tensor:
    return esmm_loss(
        model, torch.from_numpy(log.history), torch.from_numpy(log.item)[:, None],
        torch.from_numpy(log.position)[:, None], torch.from_numpy(log.click).float()[:, None],
        torch.from_numpy(log.purchase).float()[:, None],
    )  # fmt: skip


def test_the_gradient_is_the_full_models_on_the_rows_the_log_uses() -> None:
    model, log = tiny_model(), a_log()
    sig = signal_of_model(model, log, version=7)
    model.zero_grad()
    loss_of(model, log).backward()
    assert model.item_embedding.weight.grad is not None
    assert model.item_bias.weight.grad is not None
    full = torch.cat([model.item_embedding.weight.grad, model.item_bias.weight.grad], 1).numpy()
    assert sig.version == 7 and sig.examples == 24
    np.testing.assert_array_equal(sig.row_ids, log.rows())
    np.testing.assert_allclose(sig.row_grad, full[sig.row_ids], rtol=1e-4, atol=1e-7)
    assert np.abs(np.delete(full, sig.row_ids, axis=0)).max() == 0  # nothing elsewhere
    for name, p in model.named_parameters():
        if name in sig.dense_grad:
            assert p.grad is not None
            np.testing.assert_allclose(sig.dense_grad[name], p.grad.numpy(), rtol=1e-4, atol=1e-7)
    assert set(sig.dense_grad) == set(federated_dense(model))


def test_the_fisher_is_the_mean_of_per_example_squared_gradients() -> None:
    model, log = tiny_model(1), a_log(6, seed=1)
    ids = log.rows()
    rows, dense, cats = federated_rows(model)[ids], federated_dense(model), (ids % 4)
    sig = compute_signal(ids, rows, dense, cats, log, 0, chunk=4)  # chunks of 4, 2
    want_rows = np.zeros_like(sig.row_fisher)
    for k in range(6):
        one = ValidationLog(*(a[k : k + 1] for a in log.arrays()))
        g = signal_of_model(model, one)
        pos = np.searchsorted(sig.row_ids, g.row_ids)
        want_rows[pos] += g.row_grad**2 / 6
        np.testing.assert_allclose(g.row_fisher, g.row_grad**2, rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(sig.row_fisher, want_rows, rtol=1e-3, atol=1e-10)
    assert sig.damping == pytest.approx(
        0.1 * np.mean(np.concatenate([sig.row_fisher.ravel(),
                                      *(f.ravel() for f in sig.dense_fisher.values())]))
    )  # fmt: skip


def test_a_first_order_score_predicts_the_loss_decrease_of_a_small_step() -> None:
    model, log = tiny_model(2), a_log(32, seed=2)
    sig = decode_signal(encode_signal(signal_of_model(model, log)))  # as the aggregator reads it
    rng = np.random.default_rng(3)
    ids = np.array([1, 4, 9, 33, 38])  # 38: in no impression
    rows = rng.normal(0, 1e-3, (len(ids), 6)).astype(np.float32)
    dense = {n: rng.normal(0, 1e-3, a.shape).astype(np.float32)
             for n, a in federated_dense(model).items()}  # fmt: skip
    u = ModelUpdate("d", ids, rows, np.ones(len(ids)), dense)
    before = float(loss_of(model, log).detach())
    stepped_rows = federated_rows(model)
    stepped_rows[ids] += rows
    stepped = ranker_from_federated(
        stepped_rows, {n: a + dense[n] for n, a in federated_dense(model).items()},
        model.item_category.numpy(),
    )  # fmt: skip
    decrease = before - float(loss_of(stepped, log).detach())
    predicted = scores([u], sig, "first_order")[0]
    assert predicted == pytest.approx(decrease, rel=0.05)
    down = ModelUpdate("down", sig.row_ids, -0.01 * sig.row_grad, np.ones(len(sig.row_ids)),
                       {n: -0.01 * g for n, g in sig.dense_grad.items()})  # fmt: skip
    up = ModelUpdate("up", down.item_ids, -down.row_deltas, down.row_counts,
                     {n: -d for n, d in down.dense_deltas.items()})  # fmt: skip
    for mode in ("first_order", "fisher"):
        s = scores([down, up], sig, mode)
        assert s[0] > 0 > s[1]


def test_the_log_round_trips_and_a_ragged_one_is_refused(tmp_path: Path) -> None:
    log = a_log(5)
    log.save(tmp_path / "v.npz")
    got = ValidationLog.load(tmp_path / "v.npz")
    for a, b in zip(got.arrays(), log.arrays(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.savez(tmp_path / "bad.npz", history=log.history, item=log.item, position=log.position[:3],
             click=log.click)  # fmt: skip
    with pytest.raises(ValueError, match="one length"):
        ValidationLog.load(tmp_path / "bad.npz")
    assert len(log.sample(3, 0).item) == 3 and log.sample(99, 0) is log
    sub = compute_signal(log.rows(), federated_rows(tiny_model())[log.rows()],
                         federated_dense(tiny_model()), (log.rows() % 4), log, 0)  # fmt: skip
    assert sub.row_grad.shape == (len(log.rows()), 6)
