"""The on-device interest encoder: the last L clicked rows → a weighted pseudo-history of M rows.

Each of the M outputs pools the click rows with its own attention over them (pooling by
multi-head attention with learned seeds, Set Transformer, Lee et al., ICML 2019; M interest
capsules as in MIND, Li et al., CIKM 2019), plus a small learned correction, and carries a
weight: how many clicks it stands for in the ranker's target attention (DinRanker's
`logits_from_rows`). What leaves the device is these M (row, weight) pairs, never an id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

NEG = -1e9  # masked attention logit (finite: a device with no clicks gets no NaN)


@dataclass(frozen=True)
class EncoderConfig:
    dim: int  # embedding row width (the bundle's rows)
    history_len: int = 30  # clicked rows the device keeps (the ranker's history length)
    n_interests: int = 4  # M: pseudo-history entries sent to the cloud
    hidden: int = 64

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class InterestEncoder(nn.Module):
    """rows (B, L, D) + mask (B, L), most recent last → interests (B, M, D), weights (B, M)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, m = cfg.hidden, cfg.n_interests
        self.project = nn.Linear(cfg.dim, h)
        self.recency = nn.Parameter(torch.zeros(cfg.history_len, h))  # slot l: l-th oldest
        self.seeds = nn.Linear(h, m)  # one attention query per output
        out = nn.Linear(h, cfg.dim)
        nn.init.zeros_(out.weight)  # starts as pure attention pooling of the rows
        nn.init.zeros_(out.bias)
        self.correct = nn.Sequential(nn.Linear(cfg.dim + h, h), nn.PReLU(), out)
        self.weigh = nn.Linear(h + 1, 1)

    def forward(self, rows: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.tanh(self.project(rows) + self.recency)  # (B, L, H)
        scores = self.seeds(hidden).transpose(1, 2)  # (B, M, L)
        scores = torch.where(mask.unsqueeze(1) > 0, scores, torch.full_like(scores, NEG))
        attend = torch.softmax(scores, dim=-1)
        pooled = attend @ rows  # (B, M, D): convex combinations of the clicked rows
        context = attend @ hidden  # (B, M, H)
        interests = pooled + self.correct(torch.cat([pooled, context], dim=-1))
        clicks = mask.sum(1, keepdim=True)  # (B, 1)
        count = torch.log1p(clicks).unsqueeze(1).expand(-1, self.cfg.n_interests, 1)
        share = nn.functional.softplus(self.weigh(torch.cat([context, count], dim=-1)))
        weights = share.squeeze(-1) * (clicks > 0).float()  # no clicks: nothing to weigh
        return interests, weights
