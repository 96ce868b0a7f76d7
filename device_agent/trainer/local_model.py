"""The device's copy of its submodel: the ranker restricted to the pulled rows, trained locally.

The federation trains the cloud ranker (DIN with ESMM heads) — its item rows and dense layers —
rather than the device's GRU re-ranker: the ranker is where the catalogue's hot/cold skew lives
(millions of item rows, each seen by few phones), which is the problem submodel learning and
FedSubAvg address; the re-ranker is small and dense and is distilled in the cloud. The device
never holds the whole table: row k of its model is pulled item_ids[k], so the item index space
is remapped to 0..n−1 and the category buffer is filled from the categories of its cloud lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tandem_core.federated.update import ModelUpdate
from tandem_core.models.din import (
    esmm_loss,
    federated_dense,
    federated_rows,
    ranker_from_federated,
)

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


@dataclass(frozen=True)
class LocalTraining:
    """Plain SGD by default: Adam restarted every round takes a step of about ±lr on a row
    whatever its gradient, so a rare item's row, seen once on one phone, jumps as far as a hot
    one's; FedSubAvg then averages that noise over the one device holding it. SGD's step is
    proportional to the evidence (docs/benchmarks.md: +2.5 % held-out AUC over Adam)."""

    epochs: int = 2
    lr: float = 0.5
    batch_size: int = 64
    optimizer: str = "sgd"  # sgd | adam (fresh each round; its state stays on the device)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZERS)}, not {self.optimizer!r}"
            )


def samples_per_row(history: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows touched, how many samples touched each): a sample counts once for a row however
    often the item is in its history, so no count exceeds the number of samples (the cloud
    refuses a push whose counts do — they are FedSubAvg's weights)."""
    sample = np.repeat(np.arange(len(item)), history.shape[1])
    pairs = np.concatenate([
        np.stack([sample, history.reshape(-1)], 1), np.stack([np.arange(len(item)), item], 1)
    ])  # fmt: skip
    pairs = np.unique(pairs[pairs[:, 1] >= 0], axis=0)
    touched, counts = np.unique(pairs[:, 1], return_counts=True)
    return touched.astype(np.int64), counts


def train_local(
    item_ids: np.ndarray, rows: np.ndarray, dense: dict[str, np.ndarray],
    categories: np.ndarray, data: dict[str, np.ndarray], cfg: LocalTraining, seed: int = 0,
) -> ModelUpdate:  # fmt: skip
    """ESMM loss on the device's impressions: an update of the touched rows and the dense layers
    (no device, round or privacy fields yet: the participant fills them in)."""
    torch.manual_seed(seed)
    pulled = np.asarray(item_ids, dtype=np.int64)
    model = ranker_from_federated(rows, dense, categories)
    before_rows, before_dense = federated_rows(model), federated_dense(model)

    def local(a: np.ndarray) -> np.ndarray:  # global id → row of the local table (PAD stays)
        idx = np.searchsorted(pulled, np.clip(a, 0, None))
        if (a >= 0).any() and not np.array_equal(pulled[idx[a >= 0]], a[a >= 0]):
            raise ValueError("training touches an item that was not pulled")
        return np.where(a >= 0, idx, -1)

    keep = np.isin(data["item"], pulled)  # true ids dropped by the padding are not trained
    history = data["history"][keep]
    history = np.where(np.isin(history, pulled), history, -1)  # nor are they history
    tensors = [torch.from_numpy(local(history)), torch.from_numpy(local(data["item"][keep]))] + [
        torch.from_numpy(data[k][keep]) for k in ("position", "click", "purchase")
    ]
    n = len(tensors[0])
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr)
    model.train()
    for _ in range(cfg.epochs if n else 0):
        order = torch.randperm(n)
        for lo in range(0, n, cfg.batch_size):
            b = order[lo : lo + cfg.batch_size]
            h, i, p, c, y = (t[b] for t in tensors)
            loss = esmm_loss(model, h, i[:, None], p[:, None], c[:, None], y[:, None])
            opt.zero_grad()
            loss.backward()
            opt.step()
    touched, counts = samples_per_row(tensors[0].numpy(), tensors[1].numpy())
    deltas = (federated_rows(model) - before_rows)[touched] if n else np.zeros((0, rows.shape[1]))
    after = federated_dense(model)
    return ModelUpdate(
        "", pulled[touched], deltas.astype(np.float32), counts.astype(np.int64),
        {k: (after[k] - before_dense[k]).astype(np.float32) for k in dense}, int(n),
    )  # fmt: skip
