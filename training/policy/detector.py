"""Train the learned interest-shift detector on log-derived labels, export it to ONNX, judge it.

python -m training.policy.detector --world default --out artifacts/policy/default

Label: P(the user has switched away from what the cached pool was built around | the pool's
whole logged life), from a two-state switch model fitted by EM to the logs' clicks
(`training.policy.switch_hmm`). It reads only what a deployment logs: each page's items'
categories, clicks, position, which list served it (refresh steps) and the pool's category
mix. Simpler event labels were tried first and rejected (docs): "the fresh list's first click
lands in a category the old pool was not built around" is mostly decided by the cloud's
deterministic answer to the clicks just before the refresh (predictable from the present at
AUC 0.95, so it adds no information), and next-page click outcomes are too noisy per row.
The model learns E[label | what the device sees now], the device's filtered posterior; its
inputs add what the switch model lacks (which categories were clicked, the pool's mix, the
device's own prior rate). Refreshes in the logs are randomised with known probabilities.
The world's true switch flag is used only to judge.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import onnx
import torch

from device_agent.policy.detector import (
    EVENT_FEATURES,
    FLEET_PRIOR_KEY,
    INPUTS,
    SCALARS,
    WINDOW,
    ShiftDetector,
    ShiftPrior,
    built_around,
    detector_inputs,
)
from simulator.metrics import auc, gauc
from simulator.tables import markdown_table
from training.policy.device import DeviceSession, split_users
from training.policy.switch_hmm import PoolLives, SwitchHMM
from training.policy.worlds import world_named

P = (0.3, 0.08)  # refresh probabilities of the logs, cycled over sessions (as logs.py)
STEPS = SCALARS.index("steps_since_refresh")
PRIOR = SCALARS.index("prior")
Life = tuple[np.ndarray, np.ndarray, np.ndarray, bool]  # on, clicked, shown (pages × P), informed


@dataclass(frozen=True)
class DetectorLog:
    """One row per decision step (every step but a session's first), and the pools' lives."""

    events: np.ndarray  # (n, WINDOW, EVENT_FEATURES) device inputs
    scalars: np.ndarray  # (n, SCALARS); the prior column is set by with_fleet
    switched: np.ndarray  # (n,) ground truth, for judging only
    cosine: np.ndarray
    ph: np.ndarray
    shift: np.ndarray
    life: np.ndarray  # (n,) index of the pool life the row's last page belongs to
    page: np.ndarray  # (n,) that page's index in its life
    prior_events: np.ndarray  # (n,) the device's ShiftPrior state before the step
    prior_pages: np.ndarray
    lives: PoolLives

    @property
    def steps(self) -> np.ndarray:
        return self.scalars[:, STEPS].astype(np.int64)

    def with_fleet(self, fleet: float) -> DetectorLog:
        """The prior input each device had, had its tracker shrunk toward `fleet`."""
        scalars = self.scalars.copy()
        scalars[:, PRIOR] = [
            ShiftPrior(fleet, events=e, pages=p).rate()
            for e, p in zip(self.prior_events, self.prior_pages, strict=True)
        ]
        return replace(self, scalars=scalars)


ROW_FIELDS = [n for n in DetectorLog.__dataclass_fields__ if n != "lives"]


def device_history(args: tuple) -> tuple[dict[str, np.ndarray], list[Life]]:
    """One device's sessions in a row (its ShiftPrior carries over): rows and pool lives."""
    world_name, user, sessions = args
    world, cloud = world_named(world_name)
    category, width = world.catalog.category, world.cfg.page_size
    prior = ShiftPrior(fleet=0.0)  # its state only: with_fleet makes the input
    rows: dict[str, list] = {n: [] for n in ROW_FIELDS}
    lives: list[Life] = []
    for seed, n_steps, p in sessions:
        dev = DeviceSession.start(world, cloud, user, seed)
        rng = np.random.default_rng([seed, 7])
        pages: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        informed = False
        for t in range(n_steps):
            refresh = t > 0 and bool(rng.random() < p)
            if t > 0:
                events, scalars = detector_inputs(dev.view, prior=0.0)
                for name, value in (
                    ("events", events), ("scalars", scalars),
                    ("switched", dev.switched_since_pool()), ("cosine", dev.view.cosine_drift()),
                    ("ph", dev.view.page_hinkley()), ("shift", dev.view.shift()),
                    ("life", len(lives)), ("page", len(pages) - 1),
                    ("prior_events", prior.events), ("prior_pages", prior.pages),
                ):  # fmt: skip
                    rows[name].append(value)
            clicked_before = dev.view.clicks > 0
            out = dev.step(refresh)
            if out.refreshed:
                if pages:
                    lives.append(life_of(pages, informed))
                pages, informed = [], clicked_before
            cats = category[out.page]
            prior.on_page(dev.view.pool_hist, cats, out.clicks)
            pages.append(page_arrays(built_around(dev.view.pool_hist, cats), out.clicks, width))
        lives.append(life_of(pages, informed))
    return {k: np.asarray(v) for k, v in rows.items()}, lives


def life_of(pages: list[tuple[np.ndarray, np.ndarray, np.ndarray]], informed: bool) -> Life:
    on, clicked, shown = (np.stack(a) for a in zip(*pages, strict=True))
    return on, clicked, shown, informed


def page_arrays(
    on: np.ndarray, clicked: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A page as fixed-width (on, clicked, shown): a nearly empty pool shows fewer items."""
    shown = np.arange(width) < len(on)
    pad = width - len(on)
    return np.pad(on.astype(np.int64), (0, pad)), np.pad(clicked, (0, pad)), shown


def device_plan(
    world_name: str, users: np.ndarray, n_devices: int, seed: int
) -> list[tuple[int, list[tuple[int, int, float]]]]:
    """(user, [(session seed, steps, refresh probability)]) for n devices of the given users."""
    cfg = world_named(world_name)[0].cfg
    rng = np.random.default_rng([seed, 13])
    plan = []
    chosen = rng.choice(users, size=min(n_devices, len(users)), replace=False)
    for k, user in enumerate(chosen):
        n_sessions = max(1, int(rng.poisson(cfg.sessions_per_user)))
        lengths = np.clip(rng.geometric(1.0 / cfg.mean_session_steps, n_sessions), 2, 30)
        seeds = rng.integers(2**62, size=n_sessions)
        probs = [P[(k + j) % len(P)] for j in range(n_sessions)]
        plan.append((int(user), list(zip(seeds.tolist(), lengths.tolist(), probs, strict=True))))
    return plan


def collect(world_name: str, plan: list, workers: int = 2) -> DetectorLog:
    jobs = [(world_name, user, sessions) for user, sessions in plan]
    with Pool(workers) as pool:
        parts = pool.map(device_history, jobs, chunksize=8)
    offset = np.cumsum([0] + [len(lives) for _, lives in parts[:-1]])
    for (r, _), o in zip(parts, offset, strict=True):
        r["life"] = r["life"] + o  # life indices of the concatenated lives
    rows = {n: np.concatenate([r[n] for r, _ in parts]) for n in ROW_FIELDS}
    n = len(rows["life"])
    rows["events"] = rows["events"].astype(np.float32).reshape(n, WINDOW, len(EVENT_FEATURES))
    rows["scalars"] = rows["scalars"].astype(np.float32).reshape(n, len(SCALARS))
    lives = PoolLives.pack([life for _, ls in parts for life in ls])
    return DetectorLog(**rows, lives=lives)


def fleet_prior(log: DetectorLog) -> float:
    """The fleet's rate of pages with a click away from the serving pool (ShiftPrior's event)."""
    lives = log.lives
    away = (lives.clicked & (lives.on == 0) & lives.shown).any(axis=2)
    return float(away[lives.pages].mean())


def soft_labels(hmm: SwitchHMM, log: DetectorLog, smoothed: bool = True) -> np.ndarray:
    """Each row's label: the switch model's P(switched) at the row's last page, given the
    pool's whole life (smoothed: the label) or only the pages so far (filtered: the teacher's
    own detector, for comparison)."""
    smooth, filtered, *_ = hmm.posteriors(log.lives)
    return (smooth if smoothed else filtered)[log.life, log.page]


class DetectorNet(torch.nn.Module):
    """1-D conv over the last WINDOW exposures, pooled, joined with the scalars; → P(shift).

    Small on purpose (~3k weights): it runs on every feed step of the device.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, scalar_mean: np.ndarray, scalar_std: np.ndarray, width: int = 16) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(scalar_mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(scalar_std, dtype=torch.float32))
        e = len(EVENT_FEATURES)
        self.conv = torch.nn.Sequential(
            torch.nn.Conv1d(e, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv1d(width, width, 3, padding=1), torch.nn.ReLU(),
        )  # fmt: skip
        self.head = torch.nn.Sequential(
            torch.nn.Linear(2 * width + e + len(SCALARS), 32), torch.nn.ReLU(),
            torch.nn.Linear(32, 1),
        )  # fmt: skip

    def logit(self, events: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        present = events[:, :, :1]
        h = self.conv(events.transpose(1, 2)).transpose(1, 2) * present
        mean = h.sum(dim=1) / present.sum(dim=1).clamp(min=1.0)
        last = h[:, -1]
        summary = events.sum(dim=1) / WINDOW
        z = (scalars - self.mean) / self.std
        return self.head(torch.cat([mean, last, summary, z], dim=1)).squeeze(1)

    def forward(self, events: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(events, scalars))


def fit_detector(
    events: np.ndarray, scalars: np.ndarray, labels: np.ndarray, epochs: int = 8
) -> DetectorNet:
    """Cross-entropy fit to (soft) labels in [0, 1]."""
    torch.manual_seed(0)
    std = scalars.std(axis=0)
    model = DetectorNet(scalars.mean(axis=0), np.where(std > 1e-6, std, 1.0))
    ev, sc = torch.as_tensor(events), torch.as_tensor(scalars)
    y = torch.as_tensor(labels, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(512):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model.logit(ev[batch], sc[batch]), y[batch]
            )
            loss.backward()
            opt.step()
    return model.eval()


def export_detector(model: DetectorNet, path: Path, fleet: float) -> None:
    """ONNX (opset 17, legacy exporter, dynamic batch) with the fleet prior in its metadata."""
    example = (torch.zeros(2, WINDOW, len(EVENT_FEATURES)), torch.zeros(2, len(SCALARS)))
    batch_axis = {name: {0: "batch"} for name in (*INPUTS, "probability")}
    torch.onnx.export(
        model, example, str(path), input_names=list(INPUTS), output_names=["probability"],
        dynamic_axes=batch_axis, opset_version=17, dynamo=False,
    )  # fmt: skip
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {FLEET_PRIOR_KEY: repr(fleet)})
    onnx.save(proto, str(path))


def detector_row(name: str, tests: dict[str, DetectorLog], score: Callable) -> dict:
    row: dict[str, str | float] = {"detector": name}
    for test_name, log in tests.items():
        s = score(log)
        row[f"{test_name} AUC"] = auc(log.switched, s)
        row[f"{test_name} AUC within clock"] = gauc(log.switched, s, log.steps)
    return row


def detector_table(
    detector: ShiftDetector, hmm: SwitchHMM, tests: dict[str, DetectorLog]
) -> list[dict]:
    scorers: dict[str, Callable] = {
        "Ours: learned detector (ONNX)": lambda g: detector.probabilities(g.events, g.scalars),
        "Switch model, filtered (its teacher)": lambda g: soft_labels(hmm, g, smoothed=False),
        "Shift score (formula, hazard 0.12)": lambda g: g.shift,
        "Cosine distance (clicks vs pool)": lambda g: g.cosine,
        "Page–Hinkley (clicks since refresh)": lambda g: g.ph,
        "Steps since refresh (clock)": lambda g: g.scalars[:, STEPS],
    }
    return [detector_row(name, tests, score) for name, score in scorers.items()]


def markdown(rows: list[dict]) -> str:
    cells = ([f"{v:.3f}" if isinstance(v, float) else v for v in r.values()] for r in rows)
    return "\n".join(markdown_table(list(rows[0]), cells))


def validation(
    detector: ShiftDetector, hmm: SwitchHMM, train: DetectorLog, valid: DetectorLog
) -> dict[str, float]:
    """What a deployment can measure on held-out devices: cross-entropy against the soft label,
    beside the clock alone (the training label's mean per steps since refresh)."""
    y, p = soft_labels(hmm, valid), detector.probabilities(valid.events, valid.scalars)
    y_train, steps = soft_labels(hmm, train), valid.steps
    by_clock = {k: y_train[train.steps == k].mean() for k in np.unique(train.steps)}
    clock = np.array([by_clock.get(k, y_train.mean()) for k in steps])
    return {
        "rows": len(y),
        "cross_entropy": cross_entropy(y, p),
        "cross_entropy_clock_only": cross_entropy(y, clock),
        "switch_model_hazard": hmm.hazard,
        "switch_model_loglik_per_page": hmm.posteriors(valid.lives)[4] / valid.lives.pages.sum(),
    }


def cross_entropy(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="default")
    ap.add_argument("--out", type=Path, default=Path("artifacts/policy/default"))
    ap.add_argument("--train-devices", type=int, default=1200)
    ap.add_argument("--test-devices", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--tests", nargs="*", default=["seed1", "seed2"], help="other worlds to judge")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_users, test_users = split_users(world_named(args.world)[0].cfg.n_users)
    fit_users, valid_users = train_users[train_users % 8 != 0], train_users[train_users % 8 == 0]
    train = collect(args.world, device_plan(args.world, fit_users, args.train_devices, 1))
    valid = collect(args.world, device_plan(args.world, valid_users, args.test_devices // 2, 2))
    fleet = fleet_prior(train)
    train, valid = train.with_fleet(fleet), valid.with_fleet(fleet)
    t_logs = time.time() - t0
    hmm = SwitchHMM.initial(world_named(args.world)[0].cfg.page_size)
    hmm.fit(train.lives)
    model = fit_detector(train.events, train.scalars, soft_labels(hmm, train), args.epochs)
    path = args.out / "shift_detector.onnx"
    export_detector(model, path, fleet)
    detector = ShiftDetector(path.read_bytes())
    t_fit = time.time() - t0 - t_logs
    plans = {f"{args.world} held-out": (args.world, test_users)}
    plans.update({name: (name, np.arange(world_named(name)[0].cfg.n_users)) for name in args.tests})
    tests = {
        k: collect(w, device_plan(w, users, args.test_devices, 3 + i)).with_fleet(fleet)
        for i, (k, (w, users)) in enumerate(plans.items())
    }
    table = detector_table(detector, hmm, tests)
    metrics = {
        "world": args.world, "fleet_prior": fleet,
        "validation": validation(detector, hmm, train, valid), "train_rows": len(train.steps),
        "test_rows": {k: len(v.steps) for k, v in tests.items()}, "table": table,
        "seconds": {"train_logs": round(t_logs), "fit": round(t_fit),
                    "total": round(time.time() - t0)},
    }  # fmt: skip
    (args.out / "shift_detector.json").write_text(json.dumps(metrics, indent=1))
    print(markdown(table))
    print(json.dumps({k: metrics[k] for k in ("fleet_prior", "validation", "test_rows")}))
    print(f"total {time.time() - t0:.0f}s (train logs {t_logs:.0f}s, fit {t_fit:.0f}s)")


if __name__ == "__main__":
    main()
