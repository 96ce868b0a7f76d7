"""The device's submodel training: the same step as training the whole model on its data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from device_agent.trainer.local_model import LocalTraining, train_local
from tandem_core.models.din import (
    DinConfig,
    DinRanker,
    esmm_loss,
    federated_dense,
    federated_rows,
)

N_ITEMS, N_CATS = 40, 4


def full_model() -> tuple[DinRanker, np.ndarray]:
    torch.manual_seed(3)
    categories = np.arange(N_ITEMS) % N_CATS
    return DinRanker(DinConfig(N_ITEMS, N_CATS), torch.from_numpy(categories)), categories


def rows_and_dense(model: DinRanker) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return federated_rows(model), federated_dense(model)


def device_log(rng: np.random.Generator, n: int = 24) -> dict[str, np.ndarray]:
    history = np.full((n, 5), -1, dtype=np.int64)
    history[:, 2:] = rng.integers(0, 12, (n, 3))  # clicks among items 0..11
    return {
        "history": history,
        "item": rng.integers(5, 20, n).astype(np.int64),
        "position": rng.integers(0, 4, n).astype(np.int64),
        "click": (rng.random(n) < 0.4).astype(np.float32),
        "purchase": (rng.random(n) < 0.1).astype(np.float32),
    }


def test_sgd_on_the_pulled_rows_equals_sgd_on_the_whole_model() -> None:
    model, categories = full_model()
    rows, dense = rows_and_dense(model)
    data = device_log(np.random.default_rng(0))
    pulled = np.arange(0, 30)  # more than the log touches: padding rows
    cfg = LocalTraining(epochs=1, lr=0.5, batch_size=len(data["item"]), optimizer="sgd")
    result = train_local(pulled, rows[pulled], dense, categories[pulled], data, cfg)

    # the reference: one full-batch SGD step of the whole model on the same impressions
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    loss = esmm_loss(model, t["history"], t["item"][:, None], t["position"][:, None],
                     t["click"][:, None], t["purchase"][:, None])  # fmt: skip
    opt.zero_grad()
    loss.backward()
    opt.step()
    after_rows, after_dense = rows_and_dense(model)

    touched = np.unique(np.concatenate([data["history"][data["history"] >= 0], data["item"]]))
    np.testing.assert_array_equal(result.item_ids, touched)  # padding rows are not reported
    np.testing.assert_allclose(result.row_deltas, (after_rows - rows)[touched], atol=1e-6)
    for name, delta in result.dense_deltas.items():
        np.testing.assert_allclose(delta, after_dense[name] - dense[name], atol=1e-6)
    untouched = np.setdiff1d(np.arange(N_ITEMS), touched)
    np.testing.assert_array_equal(after_rows[untouched], rows[untouched])
    assert result.num_samples == len(data["item"])
    # a row's count: the impressions touching it (history or candidate), each counted once
    in_sample = (data["history"][:, :, None] == touched).any(1) | (data["item"][:, None] == touched)
    np.testing.assert_array_equal(result.row_counts, in_sample.sum(0))
    assert result.row_counts.max() <= result.num_samples


def test_a_row_counts_each_sample_once_however_often_it_is_in_the_history() -> None:
    model, categories = full_model()
    rows, dense = rows_and_dense(model)
    data = device_log(np.random.default_rng(4), n=6)
    data["history"][:, :] = 3  # item 3 fills every history slot: 5 occurrences per sample
    result = train_local(np.arange(30), rows[:30], dense, categories[:30], data, LocalTraining())
    assert result.row_counts[list(result.item_ids).index(3)] == 6 == result.num_samples


def test_impressions_of_rows_not_pulled_are_left_out() -> None:
    model, categories = full_model()
    rows, dense = rows_and_dense(model)
    data = device_log(np.random.default_rng(1))
    pulled = np.arange(0, 15)  # items 15..19 were dropped by the padding: not trained
    cfg = LocalTraining(epochs=1, lr=0.1)
    result = train_local(pulled, rows[pulled], dense, categories[pulled], data, cfg)
    assert result.num_samples == int(np.isin(data["item"], pulled).sum())
    assert set(result.item_ids.tolist()) <= set(pulled.tolist())


def test_an_unknown_optimizer_is_refused() -> None:
    model, categories = full_model()
    rows, dense = rows_and_dense(model)
    data = device_log(np.random.default_rng(2))
    with pytest.raises(ValueError, match="optimizer"):
        train_local(np.arange(30), rows[:30], dense, categories[:30], data,
                    LocalTraining(optimizer="adagrad"))  # fmt: skip
