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


def dr_pseudo_outcomes(
    x: np.ndarray, w: np.ndarray, y: np.ndarray, p: float | np.ndarray, folds: int = 2
) -> np.ndarray:
    """Doubly robust pseudo-outcomes φ with cross-fitted outcome models and the logged P(ask):
    φ = μ1 − μ0 + W (Y − μ1) / p − (1 − W)(Y − μ0) / (1 − p), so E[φ | x] = τ(x).

    Kennedy, "Towards optimal doubly robust estimation of heterogeneous causal effects", 2020.
    """
    w = w.astype(bool)
    # clipped: a logged propensity near 0 or 1 would give one row an unbounded weight
    p = np.clip(np.broadcast_to(np.asarray(p, dtype=np.float64), y.shape), 0.01, 0.99)
    idx = np.random.default_rng(0).permutation(len(y)) % folds
    phi = np.empty(len(y))
    for k in range(folds):
        tr, te = idx != k, idx == k
        f1 = _gbm().fit(x[tr & w], y[tr & w])
        f0 = _gbm().fit(x[tr & ~w], y[tr & ~w])
        m1, m0 = f1.predict(x[te]), f0.predict(x[te])
        wt, yt, pt = w[te], y[te], p[te]
        phi[te] = m1 - m0 + wt * (yt - m1) / pt - (~wt) * (yt - m0) / (1 - pt)
    return phi


def dr_learner(
    x: np.ndarray, w: np.ndarray, y: np.ndarray, p: float | np.ndarray, folds: int = 2
) -> Scorer:
    """DR-learner: gradient-boosted trees regressed on the DR pseudo-outcomes (Kennedy 2020)."""
    return _gbm().fit(x, dr_pseudo_outcomes(x, w, y, p, folds)).predict


def r_learner_mlp(
    x: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    folds: int = 2,
    cfg: FitConfig | None = None,
) -> ValueMLP:
    """R-learner with a ValueMLP as τ and the logged propensity as e(x) (ours).

    Nie & Wager, "Quasi-oracle estimation of heterogeneous treatment effects", Biometrika 2021:
    τ = argmin Σ ((Y − m(X)) − (W − e(X)) τ(X))², m = E[Y | X] cross-fitted. With e(X) the
    probability the device logged, no propensity model is fitted. The loss equals a weighted
    least squares fit of τ to (Y − m) / (W − e) with weights (W − e)², so rows explored with a
    small probability get a small weight instead of the 1/p blow-up of IPW / DR pseudo-outcomes.
    """
    idx = np.random.default_rng(0).permutation(len(y)) % folds
    m = np.empty(len(y))
    for k in range(folds):
        tr, te = idx != k, idx == k
        m[te] = _gbm().fit(x[tr], y[tr]).predict(x[te])
    resid_w = w.astype(np.float64) - p
    return fit_mlp(x, (y - m) / resid_w, cfg, weight=resid_w**2)


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


class TwoHeadNet(torch.nn.Module):
    """TARNet: a shared representation of the device's state and one outcome head per action;
    the exported output is the difference of the heads, τ(x) = μ₁(x) − μ₀(x).

    Shalit, Johansson & Sontag, "Estimating individual treatment effect: generalization bounds
    and algorithms", ICML 2017 (TARNet, without the representation-balancing penalty).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.body = torch.nn.Sequential(
            torch.nn.Linear(len(mean), hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        )  # fmt: skip
        self.heads = torch.nn.Linear(hidden, 2)  # [μ₀, μ₁]

    def outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body((x - self.mean) / self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.outcomes(x)
        return mu[:, 1] - mu[:, 0]


def tarnet(
    x: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    weight_clip: float = 2.0,
    cfg: FitConfig | None = None,
) -> TwoHeadNet:
    """TARNet on the logged outcomes, each row weighted by 1 / P(its action), clipped at
    `weight_clip` (the direct method with a propensity-weighted factual loss, so actions the
    logging policy rarely took are not under-fitted; clipped because weights of 10–20 from
    ε-greedy rows made held-out uplift ranking worse in our runs)."""
    cfg = cfg or FitConfig(epochs=40)
    torch.manual_seed(cfg.seed)
    std = x.std(axis=0)
    model = TwoHeadNet(x.mean(axis=0), np.where(std > 1e-6, std, 1.0))
    asked = w.astype(bool)
    taken = np.where(asked, p, 1.0 - p)
    weights = np.minimum(1.0 / np.maximum(taken, 1e-6), weight_clip)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    at = torch.as_tensor(asked.astype(np.int64))
    wt = torch.as_tensor(weights / weights.mean(), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(yt)).split(cfg.batch):
            opt.zero_grad()
            factual = model.outcomes(xt[batch]).gather(1, at[batch, None]).squeeze(1)
            loss = (wt[batch] * (factual - yt[batch]) ** 2).mean()
            loss.backward()
            opt.step()
    return model.eval()


@dataclass
class FitConfig:
    epochs: int = 60
    lr: float = 3e-3
    batch: int = 256
    weight_decay: float = 1e-4
    seed: int = 0


def fit_mlp(
    x: np.ndarray,
    target: np.ndarray,
    cfg: FitConfig | None = None,
    weight: np.ndarray | None = None,
) -> ValueMLP:
    """(Weighted) least-squares fit of a ValueMLP to a target."""
    cfg = cfg or FitConfig()
    torch.manual_seed(cfg.seed)
    std = x.std(axis=0)
    model = ValueMLP(x.mean(axis=0), np.where(std > 1e-6, std, 1.0))
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32)
    wt = torch.ones_like(yt) if weight is None else torch.as_tensor(weight, dtype=torch.float32)
    wt = wt / wt.mean()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(yt)).split(cfg.batch):
            opt.zero_grad()
            loss = (wt[batch] * (model(xt[batch]) - yt[batch]) ** 2).mean()
            loss.backward()
            opt.step()
    return model.eval()


def mlp_scorer(model: torch.nn.Module) -> Scorer:
    def score(q: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.as_tensor(q, dtype=torch.float32)).numpy().astype(np.float64)

    return score


def export_onnx(model: ValueMLP | TwoHeadNet, path: str) -> None:
    """Export to ONNX (opset 17, dynamic batch) with the legacy exporter."""
    d = int(model.mean.shape[0])
    torch.onnx.export(
        model, (torch.zeros(2, d),), path, input_names=["features"], output_names=["value"],
        dynamic_axes={"features": {0: "batch"}, "value": {0: "batch"}}, opset_version=17,
        dynamo=False,
    )  # fmt: skip
