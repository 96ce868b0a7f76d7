"""Distils the interest encoder from the cloud ranker on the ranker's training logs.

Teacher: DIN over the real click history (ids). Student: the same DIN, frozen, over the
encoder's pseudo-history of the history's embedding rows (`DinRanker.logits_from_rows`). The
loss is the squared error between the two on the pCTR and pCTCVR logits of the logged item and
of popularity-sampled catalogue items (the candidates retrieval asks the ranker to judge), as
in knowledge distillation (Hinton et al., NeurIPS workshop 2015). Only logged impressions
(history, item) are read: the world's true probabilities play no part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tandem_core.behavior import gather_rows
from tandem_core.models.din import DinRanker
from training.private_mode.encoder import EncoderConfig, InterestEncoder


@dataclass(frozen=True)
class DistillConfig:
    n_interests: int = 4
    epochs: int = 4
    batch_size: int = 512
    lr: float = 3e-3
    negatives: int = 4  # sampled catalogue items per logged one
    tau_scale: float = 0.1  # straight-through softmax temperature, × median category distance²
    max_examples: int = 200_000  # logged rows per epoch (a sample when the log is longer)
    valid_examples: int = 20_000
    seed: int = 0
    threads: int = 2


@dataclass(frozen=True)
class DistillData:
    """Logged click histories (ids, PAD = −1), each with the logged item and sampled ones."""

    history: np.ndarray  # (N, L) int64
    items: np.ndarray  # (N,) int64, the logged item
    sampling: np.ndarray  # (n_items,) weights of the sampled candidates


def ctcvr_logit(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor) -> torch.Tensor:
    """logit(σ(a)·σ(b)), in log space for stability."""
    log_p = nn.functional.logsigmoid(ctr_logit) + nn.functional.logsigmoid(cvr_logit)
    return log_p - torch.log(-torch.expm1(log_p.clamp(max=-1e-6)))


def category_tau(model: DinRanker, scale: float) -> float:
    """scale × the median squared distance between category embeddings."""
    table = model.category_embedding.weight.detach()
    dist = torch.cdist(table, table) ** 2
    off = dist[~torch.eye(len(table), dtype=torch.bool)]
    return float(scale * off.median()) if len(off) else 1.0


def encode(
    encoder: InterestEncoder, table: np.ndarray, history: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-history (B, M, D) and weights (B, M) of id histories, from the rows a device holds."""
    rows = torch.from_numpy(gather_rows(table, history))
    mask = torch.from_numpy((history >= 0).astype(np.float32))
    return encoder(rows, mask)


class Distiller:
    """One encoder trained against one frozen ranker."""

    def __init__(
        self,
        teacher: DinRanker,
        table: np.ndarray,
        cfg: DistillConfig,
        history_len: int,
        sampling: np.ndarray,
    ) -> None:
        self.teacher, self.table, self.cfg = teacher.eval(), table, cfg
        for p in teacher.parameters():
            p.requires_grad_(False)
        torch.manual_seed(cfg.seed)
        self.sampling = torch.from_numpy(np.asarray(sampling, dtype=np.float64))
        self.encoder = InterestEncoder(
            EncoderConfig(dim=table.shape[1], history_len=history_len, n_interests=cfg.n_interests)
        )
        self.tau = category_tau(teacher, cfg.tau_scale)

    def loss(self, history: np.ndarray, candidates: torch.Tensor, train: bool) -> torch.Tensor:
        h = torch.from_numpy(history)
        with torch.no_grad():
            t_ctr, t_cvr = self.teacher.logits(h, candidates)
            target = torch.stack([t_ctr, ctcvr_logit(t_ctr, t_cvr)])
        vectors, weights = encode(self.encoder, self.table, history)
        s_ctr, s_cvr = self.teacher.logits_from_rows(
            vectors, weights, candidates, self.tau if train else None
        )
        return ((torch.stack([s_ctr, ctcvr_logit(s_ctr, s_cvr)]) - target) ** 2).mean()

    def candidates(self, items: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        logged = torch.from_numpy(items.astype(np.int64))[:, None]
        n = len(items) * self.cfg.negatives
        neg = torch.multinomial(self.sampling, n, replacement=True, generator=gen)
        return torch.cat([logged, neg.view(len(items), self.cfg.negatives)], dim=1)

    def fit(self, train: DistillData, valid: DistillData) -> list[dict[str, float]]:
        """Adam on the encoder; the epoch with the lowest validation loss is kept."""
        torch.set_num_threads(self.cfg.threads)
        rng = np.random.default_rng(self.cfg.seed)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        train, valid = with_clicks(train), with_clicks(valid)
        v_idx = rng.permutation(len(valid.items))[: self.cfg.valid_examples]
        v_cands = self.candidates(valid.items[v_idx], gen)
        opt = torch.optim.Adam(self.encoder.parameters(), lr=self.cfg.lr)
        best, best_state, log = np.inf, None, []
        for epoch in range(self.cfg.epochs):
            self.encoder.train()
            order = rng.permutation(len(train.items))[: self.cfg.max_examples]
            losses = []
            for lo in range(0, len(order), self.cfg.batch_size):
                idx = order[lo : lo + self.cfg.batch_size]
                cands = self.candidates(train.items[idx], gen)
                loss = self.loss(train.history[idx], cands, train=True)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            score = self.valid_loss(valid.history[v_idx], v_cands)
            log.append({"epoch": epoch, "train_mse": float(np.mean(losses)), "valid_mse": score})
            if score < best:
                best = score
                best_state = {k: v.clone() for k, v in self.encoder.state_dict().items()}
        assert best_state is not None
        self.encoder.load_state_dict(best_state)
        self.encoder.eval()
        return log

    def valid_loss(self, history: np.ndarray, cands: torch.Tensor) -> float:
        self.encoder.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for lo in range(0, len(history), 2048):
                part = slice(lo, lo + 2048)
                size = len(history[part])
                total += float(self.loss(history[part], cands[part], train=False)) * size
                n += size
        return total / max(n, 1)


def with_clicks(data: DistillData) -> DistillData:
    """Only rows with at least one click: a device without any sends no interest set."""
    keep = (data.history >= 0).any(axis=1)
    return DistillData(data.history[keep], data.items[keep], data.sampling)


def distill_encoder(
    teacher: DinRanker,
    table: np.ndarray,
    train: DistillData,
    valid: DistillData,
    cfg: DistillConfig,
) -> tuple[InterestEncoder, list[dict[str, float]]]:
    """The encoder distilled from `teacher` over the device rows `table`, and its epoch log."""
    distiller = Distiller(teacher, table, cfg, train.history.shape[1], train.sampling)
    log = distiller.fit(train, valid)
    return distiller.encoder, log
