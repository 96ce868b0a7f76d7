"""DIN-style ranker with ESMM heads (Zhou et al., KDD 2018; Ma et al., SIGIR 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class DinConfig:
    n_items: int
    n_categories: int
    item_dim: int = 32
    category_dim: int = 8
    attention_hidden: int = 36
    tower_hidden: tuple[int, ...] = (96, 48)
    n_positions: int = 8  # position-bias tower size; used in training only (PAL)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes):
        layers += [nn.Linear(a, b), nn.PReLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


class TargetAttention(nn.Module):
    """DIN's activation unit: weight each behaviour by an MLP of [q, k, q − k, q ⊙ k].

    As in the paper the weights are not softmax-normalised, so the pooled vector keeps the
    intensity of the user's interest in the candidate.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.unit = _mlp([4 * dim, hidden, 1])

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # query (B, C, D), keys (B, L, D), mask (B, L) → pooled (B, C, D)
        b, c, d = query.shape
        length = keys.shape[1]
        q = query.unsqueeze(2).expand(b, c, length, d)
        k = keys.unsqueeze(1).expand(b, c, length, d)
        weights = self.unit(torch.cat([q, k, q - k, q * k], dim=-1)).squeeze(-1)
        weights = weights * mask.unsqueeze(1)
        return torch.einsum("bcl,bld->bcd", weights, keys)


class DinRanker(nn.Module):
    """Scores candidates against a behaviour sequence; two heads: pCTR and pCTCVR."""

    item_category: torch.Tensor  # buffer: item id → category id

    def __init__(self, cfg: DinConfig, item_category: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_embedding = nn.Embedding(cfg.n_items, cfg.item_dim)
        self.category_embedding = nn.Embedding(cfg.n_categories, cfg.category_dim)
        nn.init.normal_(self.item_embedding.weight, std=0.05)
        nn.init.normal_(self.category_embedding.weight, std=0.05)
        self.register_buffer("item_category", item_category.long(), persistent=True)
        dim = cfg.item_dim + cfg.category_dim
        self.attention = TargetAttention(dim, cfg.attention_hidden)
        tower_in = 4 * dim + 2
        self.ctr_tower = _mlp([tower_in, *cfg.tower_hidden, 1])
        self.cvr_tower = _mlp([tower_in, *cfg.tower_hidden, 1])
        self.position_bias = nn.Embedding(cfg.n_positions, 1)
        nn.init.zeros_(self.position_bias.weight)
        self.item_bias = nn.Embedding(cfg.n_items, 2)  # per-item CTR and CVR offsets (wide part)
        nn.init.zeros_(self.item_bias.weight)

    def embed(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ids (PAD = −1 allowed) → (embeddings with zeros at PAD, mask)."""
        mask = (items >= 0).float()
        safe = items.clamp(min=0)
        emb = torch.cat(
            [self.item_embedding(safe), self.category_embedding(self.item_category[safe])], dim=-1
        )
        return emb * mask.unsqueeze(-1), mask

    def logits(
        self, history: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """history (B, L), candidates (B, C) → (ctr_logit, cvr_logit), each (B, C)."""
        keys, key_mask = self.embed(history)
        hist_cat = torch.where(history >= 0, self.item_category[history.clamp(min=0)], -1)
        cand_cat = self.item_category[candidates.clamp(min=0)]
        same = (hist_cat.unsqueeze(1) == cand_cat.unsqueeze(2)).float()  # (B, C, L)
        return self._heads(keys, key_mask, same, candidates)

    def logits_from_rows(
        self,
        rows: torch.Tensor,
        weight: torch.Tensor,
        candidates: torch.Tensor,
        tau: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same heads over behaviour *rows* (B, L, D) with a weight each (B, L): the private
        mode's entry point, which never sees the behaviour's ids.

        A weight generalises the padding mask: 0/1 with the real rows (`embed` of the ids) gives
        exactly `logits(ids)`; a weight w counts its row as w behaviours (a pseudo-history entry
        standing for several clicks). A row's category is the nearest category embedding to its
        category part (exact for real rows); with `tau` the category shares also pass gradients
        through a softmax of −distance²/tau (straight-through, Bengio et al., arXiv 2013).
        """
        cat_part = rows[..., self.cfg.item_dim :]
        table = self.category_embedding.weight
        dist = ((cat_part.unsqueeze(-2) - table) ** 2).sum(-1)  # (B, L, K)
        cand_cat = self.item_category[candidates.clamp(min=0)]
        same = (dist.argmin(-1).unsqueeze(1) == cand_cat.unsqueeze(2)).float()  # (B, C, L)
        if tau is not None:
            soft = torch.softmax(-dist / tau, dim=-1).transpose(1, 2)  # (B, K, L)
            index = cand_cat.unsqueeze(-1).expand(-1, -1, rows.shape[1])
            soft_same = soft.gather(1, index)  # (B, C, L)
            same = same + soft_same - soft_same.detach()
        return self._heads(rows, weight, same, candidates)

    def _heads(
        self, keys: torch.Tensor, weight: torch.Tensor, same: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both towers given the behaviour keys, their weights and the same-category matrix."""
        query, _ = self.embed(candidates)
        interest = self.attention(query, keys, weight)
        mean = (keys * weight.unsqueeze(-1)).sum(1) / weight.sum(1, keepdim=True).clamp(min=1.0)
        mean = mean.unsqueeze(1).expand_as(query)
        features = torch.cat(
            [query, interest, query * interest, mean, self._category_match(same, weight)], dim=-1
        )
        bias = self.item_bias(candidates.clamp(min=0))
        ctr = self.ctr_tower(features).squeeze(-1) + bias[..., 0]
        cvr = self.cvr_tower(features).squeeze(-1) + bias[..., 1]
        return ctr, cvr

    @staticmethod
    def _category_match(same: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Share of the behaviour, and of its last 5 events, in each candidate's category."""
        same = same * weight.unsqueeze(1)  # (B, C, L)
        n_all = weight.sum(1).clamp(min=1.0)[:, None]
        recent = weight[:, -5:]
        n_recent = recent.sum(1).clamp(min=1.0)[:, None]
        share_all = same.sum(-1) / n_all
        share_recent = same[..., -5:].sum(-1) / n_recent
        return torch.stack([share_all, share_recent], dim=-1)

    def forward(
        self, history: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Serving: (pCTR, pCTCVR) per candidate; position plays no part (PAL)."""
        ctr_logit, cvr_logit = self.logits(history, candidates)
        p_ctr = torch.sigmoid(ctr_logit)
        return p_ctr, p_ctr * torch.sigmoid(cvr_logit)

    def forward_rows(
        self, rows: torch.Tensor, weight: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Serving over behaviour rows (`logits_from_rows`): (pCTR, pCTCVR) per candidate."""
        ctr_logit, cvr_logit = self.logits_from_rows(rows, weight, candidates)
        p_ctr = torch.sigmoid(ctr_logit)
        return p_ctr, p_ctr * torch.sigmoid(cvr_logit)


def esmm_loss(
    model: DinRanker,
    history: torch.Tensor,
    candidates: torch.Tensor,
    position: torch.Tensor,
    click: torch.Tensor,
    purchase: torch.Tensor,
) -> torch.Tensor:
    """BCE(click, pCTR) + BCE(purchase, pCTCVR) over all exposures (ESMM).

    In training a position-bias logit is added to the CTR logit (PAL, Guo et al., RecSys 2019)
    so the towers learn relevance rather than the slot an item happened to be shown in.
    """
    ctr_logit, cvr_logit = model.logits(history, candidates)
    pos = position.clamp(max=model.cfg.n_positions - 1)
    ctr_logit = ctr_logit + model.position_bias(pos).squeeze(-1)
    bce = nn.functional.binary_cross_entropy_with_logits
    ctr_loss = bce(ctr_logit, click)
    # log pCTCVR = log σ(a) + log σ(b): computed in log space for stability
    log_ctcvr = nn.functional.logsigmoid(ctr_logit) + nn.functional.logsigmoid(cvr_logit)
    log_not = torch.log1p(-torch.exp(log_ctcvr).clamp(max=1 - 1e-6))
    ctcvr_loss = -(purchase * log_ctcvr + (1 - purchase) * log_not).mean()
    return ctr_loss + ctcvr_loss


# The federated model's layout (training/ranker/bundle.py: federated_start): a row per
# item = [item embedding | item bias (CTR, CVR)]; every other float layer is dense, by name.
FEDERATED_BIAS_COLUMNS = 2
FEDERATED_ROWS = ("item_embedding.weight", "item_bias.weight")


def federated_rows(model: DinRanker) -> np.ndarray:
    """[item embedding | item bias] per item of `model` (a new array)."""
    rows = torch.cat([model.item_embedding.weight, model.item_bias.weight], 1)
    return rows.detach().numpy()


def federated_dense(model: DinRanker) -> dict[str, np.ndarray]:
    """Every other layer of `model` by name (copies): the federated model's dense part."""
    return {
        n: p.detach().numpy().copy() for n, p in model.named_parameters() if n not in FEDERATED_ROWS
    }


def config_from_federated(row_dim: int, dense: Mapping[str, np.ndarray], n_items: int) -> DinConfig:
    """The ranker's architecture, read off the shapes of the federated dense layers."""
    tower = [k for k in dense if k.startswith("ctr_tower.") and k.endswith(".weight")]
    hidden = [
        dense[k].shape[0]
        for k in sorted(tower, key=lambda k: int(k.split(".")[1]))
        if dense[k].ndim == 2
    ]
    return DinConfig(
        n_items=n_items,
        n_categories=dense["category_embedding.weight"].shape[0],
        item_dim=row_dim - FEDERATED_BIAS_COLUMNS,
        category_dim=dense["category_embedding.weight"].shape[1],
        attention_hidden=dense["attention.unit.0.weight"].shape[0],
        tower_hidden=tuple(hidden[:-1]),
        n_positions=dense["position_bias.weight"].shape[0],
    )


def ranker_from_federated(
    rows: np.ndarray, dense: Mapping[str, np.ndarray], categories: np.ndarray
) -> DinRanker:
    """A DIN whose item k has federated row k and the category categories[k] (the device's
    remapped submodel, or the whole catalogue when the cloud publishes the federated model)."""
    cfg = config_from_federated(rows.shape[1], dense, max(len(rows), 1))
    model = DinRanker(cfg, torch.from_numpy(np.array(categories, dtype=np.int64)))
    with torch.no_grad():
        if len(rows):
            t = torch.from_numpy(np.asarray(rows, dtype=np.float32))
            model.item_embedding.weight.copy_(t[:, : cfg.item_dim])
            model.item_bias.weight.copy_(t[:, cfg.item_dim :])
        params = dict(model.named_parameters())
        for name, value in dense.items():
            params[name].copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))
    return model
