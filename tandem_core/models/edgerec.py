"""On-device re-ranker over embedding rows (EdgeRec, Gong et al., CIKM 2020); training side."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from protos.actions import Action

N_ACTIONS = len(Action)  # one-hot per behaviour event (protos.actions); all zeros = padding


@dataclass(frozen=True)
class EdgeRecConfig:
    dim: int  # embedding row width the cloud sends
    hidden: int = 32
    mlp_hidden: int = 32

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class EdgeReranker(nn.Module):
    """GRU over the device's recent events (exposures included: real-time negative feedback),
    then each candidate attends over the encoded events; an MLP gives one logit per candidate.

    Inputs are embedding rows, never ids, so the big table stays in the cloud.
    """

    def __init__(self, cfg: EdgeRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.GRU(cfg.dim + N_ACTIONS, cfg.hidden, batch_first=True)
        self.query = nn.Linear(cfg.dim, cfg.hidden)
        self.key_action = nn.Linear(N_ACTIONS, cfg.hidden, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(3 * cfg.hidden + 1, cfg.mlp_hidden), nn.ReLU(), nn.Linear(cfg.mlp_hidden, 1)
        )

    def forward(
        self,
        behavior: torch.Tensor,  # (B, L, D) float32, most recent last
        behavior_action: torch.Tensor,  # (B, L, 3) one-hot, zeros = padding
        candidates: torch.Tensor,  # (B, C, D)
        cloud_score: torch.Tensor,  # (B, C)
    ) -> torch.Tensor:
        mask = behavior_action.sum(-1, keepdim=True).clamp(max=1.0)  # (B, L, 1)
        states, _ = self.encoder(torch.cat([behavior, behavior_action], dim=-1))
        keys = (states + self.key_action(behavior_action)) * mask  # (B, L, H)
        q = self.query(candidates)  # (B, C, H)
        logits = torch.einsum("bch,blh->bcl", q, keys) / self.cfg.hidden**0.5
        logits = logits.masked_fill(mask.transpose(1, 2) < 0.5, -1e4)
        attn = torch.softmax(logits, dim=-1) * mask.transpose(1, 2)  # no events → zero context
        context = torch.einsum("bcl,blh->bch", attn, keys)
        features = torch.cat([q, context, q * context, cloud_score.unsqueeze(-1)], dim=-1)
        return self.mlp(features).squeeze(-1)
