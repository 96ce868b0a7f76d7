"""Policy generations: the fleet logs with exploration, a value model is trained from the logs,
gated, released signed, and the next generation decides with it.

python -m training.policy.generations --world default --generations 3

Generation 0 has no value model: the agent's rule on the shift score. Every generation runs the
agent's own decision code (`device_agent.policy.decision`: one price λ per worker shared by its
sessions, each session's allowance, ε-greedy exploration with logged propensities) and its ONNX
value model (`device_agent.policy.value`). The candidate of generation g is TARNet fitted on
every log so far (even-id users) and is promoted only if its log-only validation — DR-AUUC on
this generation's odd-id users — is at least the serving rule's minus a tolerance; a promoted
model is released, signed, into `<out>/registry/value_model` and read back verified for the
next generation. The world's expected reward (truth) only judges the generations.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from device_agent.policy.value import RequestValueModel
from simulator.tables import markdown_table
from tandem_core.release import VALUE_MODEL, load_verified
from tandem_core.signing import build_verifier
from training.policy.device import session_plan
from training.policy.logs import UpliftLog, collect
from training.policy.train import GENERATION_0, dr_auuc
from training.policy.uplift import dr_pseudo_outcomes, export_onnx, mlp_scorer, tarnet
from training.policy.worlds import WORLDS
from training.release import VALUE_ONNX, ensure_dev_key, release_value_model


@dataclass(frozen=True)
class Generation:
    index: int
    serving: str  # "shift score" or the value model's version
    rate: float  # requests / decision steps, exploration included
    reward: float  # realised clicks + 3 × purchases per step
    expected: float  # the world's expected reward per step (truth, judging only)
    explored: float  # share of decisions randomised with both actions possible
    candidate_auuc: float
    serving_auuc: float
    promoted: bool


def gate_scores(  # type: ignore[no-untyped-def]
    candidate, serving, x: np.ndarray, w: np.ndarray, y: np.ndarray, p_ask: np.ndarray
) -> tuple[float, float]:
    """DR-AUUC of the candidate and of the serving rule on held-out explored rows (x, asked,
    realised reward, logged P(ask)): the log-only gate of a value model."""
    phi = dr_pseudo_outcomes(x, w, y, p_ask)
    return dr_auuc(candidate(x), phi), dr_auuc(serving(x), phi)


def run(
    world: str, n_gens: int, sessions: int, out: Path, budget: float, tolerance: float
) -> list[Generation]:
    signer, public = ensure_dev_key(out / "release")
    verifier = build_verifier(None, public, allow_unsigned=False)
    kind_dir = out / "registry" / VALUE_MODEL
    users = np.arange(WORLDS[world].n_users)
    policy = replace(GENERATION_0, budget=budget)
    serving_name = "shift score"

    def serving_score(q: np.ndarray) -> np.ndarray:
        return q[:, 0].astype(np.float64)  # the shift score is feature 0

    history: list[UpliftLog] = []
    report = []
    for g in range(n_gens):
        plan = session_plan(0, users, sessions, 1000)  # the same sessions: only the policy differs
        log = collect(world, plan, policy, horizon=6)
        history.append(log)
        train = UpliftLog.concat([h.select(h.user % 2 == 0) for h in history])
        rows = train.select(train.explored)
        model = tarnet(rows.x, rows.w, rows.y, rows.p)
        held_out = log.select(log.user % 2 == 1)
        gate_rows = held_out.select(held_out.explored)
        cand, cur = gate_scores(
            mlp_scorer(model), serving_score, gate_rows.x, gate_rows.w, gate_rows.y, gate_rows.p
        )
        promoted = bool(cand >= cur - tolerance)
        report.append(Generation(
            g, serving_name, float(log.w.mean()), float(log.reward.mean()),
            float(log.expected.mean()), float(log.explored.mean()), cand, cur, promoted,
        ))  # fmt: skip
        print(report[-1], flush=True)
        if promoted:
            staged = out / f"candidate-{g}.onnx"
            export_onnx(model, str(staged))
            metrics = {"dr_auuc": cand, "serving_dr_auuc": cur, "generation": g}
            serving_name = release_value_model(kind_dir, staged, signer, {"validation": metrics})
            artifact = load_verified(kind_dir, verifier, (VALUE_MODEL,))
            onnx = artifact.files[VALUE_ONNX]
            serving_model = RequestValueModel(onnx)
            serving_score = serving_model.values  # type: ignore[assignment]
            # the value is in reward units: start the price at 0 and let the pacer find it
            policy = replace(policy, kind="value", model=onnx, threshold=0.0)
    (out / "generations.json").write_text(json.dumps([r.__dict__ for r in report], indent=1))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--world", default="default", choices=list(WORLDS))
    ap.add_argument("--generations", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=3000, help="sessions per generation")
    ap.add_argument("--budget", type=float, default=0.10)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--out", type=Path, default=Path("artifacts/policy/generations"))
    args = ap.parse_args()
    t0 = time.time()
    report = run(args.world, args.generations, args.sessions, args.out, args.budget,
                 args.tolerance)  # fmt: skip
    head = [
        "generation", "deciding with", "realised rate", "reward / step",
        "E[reward] / step (truth)", "candidate DR-AUUC", "serving DR-AUUC", "promoted",
    ]  # fmt: skip
    rows = [
        (r.index, r.serving, f"{r.rate:.3f}", f"{r.reward:.3f}", f"{r.expected:.4f}",
         f"{r.candidate_auuc:.3f}", f"{r.serving_auuc:.3f}", r.promoted)
        for r in report
    ]  # fmt: skip
    print("\n".join(markdown_table(head, rows)))
    print(f"world {args.world}, budget {args.budget:.0%}, {args.sessions} sessions per "
          f"generation, {time.time() - t0:.0f}s")  # fmt: skip


if __name__ == "__main__":
    main()
