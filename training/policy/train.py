"""Train and evaluate the request-value estimators and the shift detector; export ours to ONNX.

python -m training.policy.train --out artifacts/policy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from device_agent.policy.features import FEATURES
from simulator.metrics import auc, auuc, gauc, true_uplift_auuc
from simulator.tables import markdown_table
from training.policy.device import BENCH_WORLD, session_plan, split_users
from training.policy.logs import UpliftLog, collect
from training.policy.uplift import (
    Scorer,
    ValueMLP,
    class_transformation,
    dr_learner,
    export_onnx,
    fit_mlp,
    mlp_scorer,
    s_learner,
    t_learner,
)

P = (0.3, 0.08)  # refresh probabilities of the exploration logs, cycled over sessions
STEPS = FEATURES.index("steps_since_refresh")


def fit_all(log: UpliftLog) -> tuple[dict[str, Scorer], ValueMLP]:
    x, w, y = log.x, log.w.astype(float), log.y
    mlp = fit_mlp(x, log.tau)
    return {
        "S-learner": s_learner(x, w, y),
        "T-learner": t_learner(x, w, y),
        "Class transformation": class_transformation(x, w, y, log.p),
        "DR-learner": dr_learner(x, w, y, log.p),
        "Ours: rollout-uplift MLP": mlp_scorer(mlp),
    }, mlp


def uplift_table(scorers: dict, tests: dict[str, UpliftLog]) -> list[dict]:
    rows = []
    for name, score in scorers.items():
        row: dict[str, str | float] = {"estimator": name}
        for test_name, log in tests.items():
            s = score(log.x)
            row[f"{test_name} true AUUC"] = true_uplift_auuc(s, log.tau)
            row[f"{test_name} Qini"] = auuc(s, log.w, log.y)
        rows.append(row)
    return rows


def shift_table(tests: dict[str, UpliftLog]) -> list[dict]:
    rows = []
    detectors = {
        "Ours: shift score": lambda g: g.x[:, 0],
        "Cosine distance (clicks vs pool)": lambda g: g.cosine,
        "Page–Hinkley (clicks since refresh)": lambda g: g.ph,
        "Steps since refresh (clock)": lambda g: g.x[:, STEPS],
    }
    for name, score in detectors.items():
        row: dict[str, str | float] = {"detector": name}
        for test_name, log in tests.items():
            row[f"{test_name} AUC"] = auc(log.switched, score(log))
            row[f"{test_name} AUC within clock"] = gauc(log.switched, score(log), log.x[:, STEPS])
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    cells = ([f"{v:.3f}" if isinstance(v, float) else v for v in r.values()] for r in rows)
    return "\n".join(markdown_table(list(rows[0]), cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="artifacts/policy")
    ap.add_argument("--train-sessions", type=int, default=600)
    ap.add_argument("--test-sessions", type=int, default=250)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument(
        "--registry", type=Path, default=None,
        help="also release the value model, signed, into REGISTRY/value_model",
    )  # fmt: skip
    ap.add_argument(
        "--release-key", type=Path, default=None,
        help="the release key (default $TANDEM_RELEASE_KEY_FILE)",
    )  # fmt: skip
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_users, test_users = split_users(BENCH_WORLD["n_users"])
    all_users = np.arange(BENCH_WORLD["n_users"])
    train = collect(0, session_plan(0, train_users, args.train_sessions, 0), P, 3, args.rollouts)
    tests = {
        "seed 0 held-out users": collect(
            0, session_plan(0, test_users, args.test_sessions, 1), P, 3, args.rollouts
        )
    }
    for seed in (1, 2):
        plan = session_plan(0, all_users, args.test_sessions, 100 + seed)
        tests[f"world seed {seed}"] = collect(seed, plan, P, 3, args.rollouts)
    print(f"logs: train {len(train.y)} rows, collected in {time.time() - t0:.0f}s")
    scorers, mlp = fit_all(train)
    export_onnx(mlp, str(out / "request_value.onnx"))
    if args.registry is not None:
        from tandem_core.release import VALUE_MODEL
        from training.release import release_value_model, signer_from

        signer = signer_from(args.release_key)
        kind_dir = args.registry / VALUE_MODEL
        version = release_value_model(kind_dir, out / "request_value.onnx", signer)
        print(f"value_model {version} is current in {kind_dir} (signed: {signer is not None})")
    up, sh = uplift_table(scorers, tests), shift_table(tests)
    (out / "results.json").write_text(json.dumps({"uplift": up, "shift": sh}, indent=1))
    print(markdown(up), "\n")
    print(markdown(sh))
    print(f"rows: train {len(train.y)}, " + ", ".join(f"{k} {len(v.y)}" for k, v in tests.items()))
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
