"""Uplift estimators of the value of a request: S-, T-learner, class transformation, DR, ours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor

Scorer = Callable[[np.ndarray], np.ndarray]


def _gbm(seed: int = 0) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(
        max_iter=150, learning_rate=0.08, max_leaf_nodes=15, min_samples_leaf=40, random_state=seed
    )


def s_learner(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> Scorer:
    """One model with the treatment as a feature; τ(x) = f(x, 1) − f(x, 0)."""
    f = _gbm().fit(np.column_stack([x, w]), y)
    ones, zeros = np.ones((1,)), np.zeros((1,))
    return lambda q: (
        f.predict(np.column_stack([q, np.resize(ones, len(q))]))
        - f.predict(np.column_stack([q, np.resize(zeros, len(q))]))
    )


def t_learner(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> Scorer:
    """Two outcome models, treated and control; τ(x) = f1(x) − f0(x)."""
    w = w.astype(bool)
    f1, f0 = _gbm().fit(x[w], y[w]), _gbm().fit(x[~w], y[~w])
    return lambda q: f1.predict(q) - f0.predict(q)


def class_transformation(
    x: np.ndarray, w: np.ndarray, y: np.ndarray, p: float | np.ndarray
) -> Scorer:
    """Transformed outcome Z = Y (W − p) / (p (1 − p)), E[Z | x] = τ(x).

    Athey & Imbens, "Machine learning methods for estimating heterogeneous causal effects",
    2015 (the continuous-outcome form of Jaśkowski & Jaroszewicz's class transformation, 2012).
    p may be a per-row known propensity.
    """
    z = y * (w - p) / (p * (1 - p))
    f = _gbm().fit(x, z)
    return f.predict


def dr_learner(
    x: np.ndarray, w: np.ndarray, y: np.ndarray, p: float | np.ndarray, folds: int = 2
) -> Scorer:
    """DR-learner with cross-fitted outcome models and the known propensity p.

    Kennedy, "Towards optimal doubly robust estimation of heterogeneous causal effects", 2020.
    """
    w = w.astype(bool)
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), y.shape)
    idx = np.random.default_rng(0).permutation(len(y)) % folds
    phi = np.empty(len(y))
    for k in range(folds):
        tr, te = idx != k, idx == k
        f1 = _gbm().fit(x[tr & w], y[tr & w])
        f0 = _gbm().fit(x[tr & ~w], y[tr & ~w])
        m1, m0 = f1.predict(x[te]), f0.predict(x[te])
        wt, yt, pt = w[te], y[te], p[te]
        phi[te] = m1 - m0 + wt * (yt - m1) / pt - (~wt) * (yt - m0) / (1 - pt)
    return _gbm().fit(x, phi).predict


class ValueMLP(torch.nn.Module):
    """Small MLP with the feature standardisation built in, so ONNX takes raw features."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        d = len(mean)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)


@dataclass
class FitConfig:
    epochs: int = 60
    lr: float = 3e-3
    batch: int = 256
    weight_decay: float = 1e-4
    seed: int = 0


def fit_mlp(x: np.ndarray, target: np.ndarray, cfg: FitConfig | None = None) -> ValueMLP:
    """Least-squares fit of a ValueMLP to a target (here: rollout uplift on training sessions)."""
    cfg = cfg or FitConfig()
    torch.manual_seed(cfg.seed)
    std = x.std(axis=0)
    model = ValueMLP(x.mean(axis=0), np.where(std > 1e-6, std, 1.0))
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(yt)).split(cfg.batch):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xt[batch]), yt[batch])
            loss.backward()
            opt.step()
    return model.eval()


def mlp_scorer(model: ValueMLP) -> Scorer:
    def score(q: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(q, dtype=torch.float32)).numpy().astype(np.float64)

    return score


def export_onnx(model: ValueMLP, path: str) -> None:
    """Export to ONNX (opset 17, dynamic batch) with the legacy exporter."""
    d = int(model.mean.shape[0])
    torch.onnx.export(
        model, (torch.zeros(1, d),), path, input_names=["features"], output_names=["value"],
        dynamic_axes={"features": {0: "batch"}, "value": {0: "batch"}}, opset_version=17,
        dynamo=False,
    )  # fmt: skip
