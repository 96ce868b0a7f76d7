"""Train the request-value model from the fleet's logs only; judge every learner on true uplift.

python -m training.policy.train --world default --out artifacts/policy/default

Every learner (ours, S-, T-learner, class transformation, DR-learner) fits the same logs: the
features, the action, its logged propensity and the realised reward of the next H steps. The
world's true uplift (paired rollouts) is used only to judge them on held-out users and other
worlds, and to fit the "oracle-label upper reference" — a model a deployment cannot train
(production has no rollouts), kept in the table as a ceiling, never shipped.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from simulator.metrics import auuc, true_uplift_auuc
from simulator.tables import markdown_table
from training.policy.device import session_plan, split_users
from training.policy.logs import LoggingPolicy, UpliftLog, collect
from training.policy.uplift import (
    FitConfig,
    Scorer,
    TwoHeadNet,
    ValueMLP,
    class_transformation,
    dr_learner,
    dr_pseudo_outcomes,
    export_onnx,
    fit_mlp,
    mlp_scorer,
    r_learner_mlp,
    s_learner,
    t_learner,
    tarnet,
)
from training.policy.worlds import WORLDS

OURS = "Ours: TARNet, propensity-weighted (ONNX)"
R_LEARNER = "R-learner MLP"
REFERENCE = "Oracle-label upper reference (rollout uplift, not deployable)"
# The generation-0 fleet: the shift-score rule paced at 10 %, 10 % of decisions randomised.
GENERATION_0 = LoggingPolicy(kind="shift", budget=0.10, threshold=0.5, exploration=0.10)


@dataclass(frozen=True)
class Fitted:
    scorers: dict[str, Scorer]
    ours: TwoHeadNet
    reference: ValueMLP | None


def fit_all(log: UpliftLog, reference_log: UpliftLog | None = None) -> Fitted:
    """Every learner on the explored rows of the same log (propensity strictly in (0, 1))."""
    rows = log.select(log.explored)
    x, w, y, p = rows.x, rows.w.astype(float), rows.y, rows.p
    ours = tarnet(x, w, y, p)
    scorers: dict[str, Scorer] = {
        "S-learner": s_learner(x, w, y),
        "T-learner": t_learner(x, w, y),
        "Class transformation": class_transformation(x, w, y, p),
        "DR-learner": dr_learner(x, w, y, p),
        R_LEARNER: mlp_scorer(r_learner_mlp(x, w, y, p, cfg=FitConfig(epochs=40))),
        OURS: mlp_scorer(ours),
    }
    reference = None
    if reference_log is not None:
        reference = fit_mlp(reference_log.x, reference_log.tau)
        scorers[REFERENCE] = mlp_scorer(reference)
    return Fitted(scorers, ours, reference)


def dr_auuc(score: np.ndarray, phi: np.ndarray) -> float:
    """The uplift area of an ordering measured with DR pseudo-outcomes instead of the truth:
    a log-only validation metric (E[φ | x] = τ(x)), normalised like `true_uplift_auuc` by the
    ordering on φ itself. Noisy, but it needs nothing a deployment lacks."""
    return true_uplift_auuc(score, phi)


def validation(scorer: Scorer, log: UpliftLog) -> dict[str, float]:
    """Log-only metrics on held-out logs: DR-AUUC and Qini on the explored rows."""
    rows = log.select(log.explored)
    phi = dr_pseudo_outcomes(rows.x, rows.w, rows.y, rows.p)
    s = scorer(rows.x)
    return {"dr_auuc": dr_auuc(s, phi), "qini": auuc(s, rows.w, rows.y), "rows": len(rows.y)}


def uplift_table(scorers: dict[str, Scorer], tests: dict[str, UpliftLog]) -> list[dict]:
    rows = []
    for name, score in scorers.items():
        row: dict[str, str | float] = {"estimator": name}
        for test_name, log in tests.items():
            s = score(log.x)
            row[f"{test_name} true AUUC"] = true_uplift_auuc(s, log.tau)
            explored = log.explored
            row[f"{test_name} Qini"] = auuc(s[explored], log.w[explored], log.y[explored])
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    cells = ([f"{v:.3f}" if isinstance(v, float) else v for v in r.values()] for r in rows)
    return "\n".join(markdown_table(list(rows[0]), cells))


def logging_policy(name: str) -> LoggingPolicy:
    if name == "random":
        return LoggingPolicy(kind="random")
    if name.startswith("shift"):  # shift or shift:EPS
        eps = float(name.split(":", 1)[1]) if ":" in name else GENERATION_0.exploration
        return replace(GENERATION_0, exploration=eps)
    raise ValueError(f"unknown logging policy {name!r} (random | shift | shift:EPS)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--world", default="default", choices=list(WORLDS))
    ap.add_argument("--out", type=Path, default=Path("artifacts/policy/default"))
    ap.add_argument("--logging", default="shift", help="random | shift | shift:EPS")
    ap.add_argument("--train-sessions", type=int, default=4000)
    ap.add_argument("--test-sessions", type=int, default=300)
    ap.add_argument(
        "--reference-sessions",
        type=int,
        default=600,
        help="training sessions with rollouts for the oracle-label reference (0: none)",
    )
    ap.add_argument("--horizon", type=int, default=6, help="steps of realised reward per label")
    ap.add_argument("--truth-horizon", type=int, default=8)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--other-worlds", default="seed1,seed2")
    ap.add_argument(
        "--registry",
        type=Path,
        default=None,
        help="also release the value model, signed, into REGISTRY/value_model",
    )
    ap.add_argument(
        "--release-key",
        type=Path,
        default=None,
        help="the release key (default $TANDEM_RELEASE_KEY_FILE)",
    )
    args = ap.parse_args()  # fmt: skip
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    n_users = WORLDS[args.world].n_users
    train_users, test_users = split_users(n_users)
    pol = logging_policy(args.logging)
    h, th, nr = args.horizon, args.truth_horizon, args.rollouts
    train = collect(args.world, session_plan(0, train_users, args.train_sessions, 0), pol, h)
    reference_log = None
    if args.reference_sessions and nr:
        plan = session_plan(0, train_users, args.reference_sessions, 5)
        reference_log = collect(args.world, plan, pol, h, nr, th)
    tests = {
        f"{args.world} held-out users": collect(
            args.world, session_plan(0, test_users, args.test_sessions, 1), pol, h, nr, th
        )
    }
    for other in filter(None, args.other_worlds.split(",")):
        plan = session_plan(0, np.arange(WORLDS[other].n_users), args.test_sessions, 101)
        tests[f"world {other}"] = collect(other, plan, pol, h, nr, th)
    t_logs = time.time() - t0
    print(f"logs: train {len(train.y)} rows ({int(train.explored.sum())} explored, "
          f"asked {train.w.mean():.3f}) in {t_logs:.0f}s", flush=True)  # fmt: skip
    fitted = fit_all(train, reference_log)
    export_onnx(fitted.ours, str(out / "request_value.onnx"))
    if fitted.reference is not None:
        export_onnx(fitted.reference, str(out / "oracle_label_value.onnx"))
    held_out = next(iter(tests.values()))
    metrics = validation(fitted.scorers[OURS], held_out)
    metrics.update(world=args.world, logging=args.logging, horizon=h, rows=len(train.y))
    if args.registry is not None:
        from tandem_core.release import VALUE_MODEL
        from training.release import release_value_model, signer_from

        signer = signer_from(args.release_key)
        kind_dir = args.registry / VALUE_MODEL
        version = release_value_model(
            kind_dir, out / "request_value.onnx", signer, extra={"validation": metrics}
        )
        print(f"value_model {version} is current in {kind_dir} (signed: {signer is not None})")
    up = uplift_table(fitted.scorers, tests) if nr else []  # true uplift needs rollouts
    seconds = time.time() - t0
    summary = {"uplift": up, "validation": metrics, "logging": repr(pol), "seconds": seconds}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    if up:
        print(markdown(up), "\n")
    print("log-only validation of ours (held-out users):", json.dumps(metrics))
    print(f"rows: train {len(train.y)}, " + ", ".join(f"{k} {len(v.y)}" for k, v in tests.items()))
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
