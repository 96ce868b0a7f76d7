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

from cloud_service.recommender.din import DinConfig, DinRanker, esmm_loss

BIAS_COLUMNS = 2  # a federated row is [item embedding | item bias (CTR, CVR)]


@dataclass(frozen=True)
class LocalTraining:
    epochs: int = 2
    lr: float = 0.01  # Adam, fresh each round; its state stays on the device
    batch_size: int = 64


@dataclass(frozen=True)
class LocalResult:
    item_ids: np.ndarray  # rows the training touched (global ids)
    row_deltas: np.ndarray  # (n, dim)
    row_counts: np.ndarray  # (n,) impressions that touched each row
    dense_deltas: dict[str, np.ndarray]
    num_samples: int


def config_from(row_dim: int, dense: dict[str, np.ndarray], n_items: int) -> DinConfig:
    """The ranker's architecture, read off the shapes of the pulled dense layers."""
    tower = [k for k in dense if k.startswith("ctr_tower.") and k.endswith(".weight")]
    hidden = [
        dense[k].shape[0]
        for k in sorted(tower, key=lambda k: int(k.split(".")[1]))
        if dense[k].ndim == 2
    ]
    return DinConfig(
        n_items=n_items,
        n_categories=dense["category_embedding.weight"].shape[0],
        item_dim=row_dim - BIAS_COLUMNS,
        category_dim=dense["category_embedding.weight"].shape[1],
        attention_hidden=dense["attention.unit.0.weight"].shape[0],
        tower_hidden=tuple(hidden[:-1]),
        n_positions=dense["position_bias.weight"].shape[0],
    )


def build_local(
    item_ids: np.ndarray, rows: np.ndarray, dense: dict[str, np.ndarray], categories: np.ndarray
) -> DinRanker:
    cfg = config_from(rows.shape[1], dense, max(len(item_ids), 1))
    model = DinRanker(cfg, torch.from_numpy(np.asarray(categories, dtype=np.int64)))
    with torch.no_grad():
        if len(item_ids):
            t = torch.from_numpy(rows.astype(np.float32))
            model.item_embedding.weight.copy_(t[:, : cfg.item_dim])
            model.item_bias.weight.copy_(t[:, cfg.item_dim :])
        params = dict(model.named_parameters())
        for name, value in dense.items():
            params[name].copy_(torch.from_numpy(value))
    return model


def _rows(model: DinRanker) -> np.ndarray:
    return torch.cat([model.item_embedding.weight, model.item_bias.weight], 1).detach().numpy()


def _dense(model: DinRanker, names: set[str]) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters() if n in names}


def train_local(
    item_ids: np.ndarray, rows: np.ndarray, dense: dict[str, np.ndarray],
    categories: np.ndarray, data: dict[str, np.ndarray], cfg: LocalTraining, seed: int = 0,
) -> LocalResult:  # fmt: skip
    """ESMM loss on the device's impressions; deltas of the touched rows and the dense layers."""
    torch.manual_seed(seed)
    pulled = np.asarray(item_ids, dtype=np.int64)
    model = build_local(pulled, rows, dense, categories)
    before_rows, before_dense = _rows(model).copy(), _dense(model, set(dense))

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
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
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
    h_np, i_np = tensors[0].numpy(), tensors[1].numpy()
    touched, counts = np.unique(np.concatenate([h_np[h_np >= 0], i_np]), return_counts=True)
    deltas = (_rows(model) - before_rows)[touched] if n else np.zeros((0, rows.shape[1]))
    after = _dense(model, set(dense))
    return LocalResult(
        pulled[touched], deltas.astype(np.float32), counts.astype(np.int64),
        {k: (after[k] - before_dense[k]).astype(np.float32) for k in dense}, int(n),
    )  # fmt: skip
