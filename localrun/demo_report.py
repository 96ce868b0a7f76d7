"""The demo's report: our policy beside AlwaysQ and NoQ, from what the fleet saw, and a plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localrun.fleet import FleetReport
from simulator.tables import markdown_table

NAMES = {"value": "ours (value-paced)", "always": "AlwaysQ", "never": "NoQ"}


@dataclass(frozen=True)
class PolicyRun:
    policy: str
    fleet: FleetReport
    seconds: float
    budget: float

    def row(self) -> dict[str, float | int | str]:
        f = self.fleet
        lat = np.asarray(f.latencies_ms) if f.latencies_ms else np.zeros(1)
        return {
            "policy": NAMES[self.policy],
            "sessions": f.sessions,
            "app_requests": f.steps + f.failures,
            "failed": f.failures,
            "served_by_cloud": f.served_by["cloud"],
            "served_locally": f.served_by["local"],
            "paced_cloud_requests": f.paced_requests,
            "request_rate": round(f.request_rate, 4),
            "clicks_per_session": round(f.clicks / max(f.sessions, 1), 3),
            "purchases_per_session": round(f.purchases / max(f.sessions, 1), 3),
            "expected_reward_per_step": round(f.expected_reward / max(f.steps, 1), 4),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "app_requests_per_s": round(f.steps / self.seconds, 1),
        }


def print_report(
    runs: list[PolicyRun], federated: dict[str, object] | None = None
) -> dict[str, object]:
    rows = [r.row() for r in runs]
    keys = list(rows[0])
    print("\n## Fleet report (same world sessions for every policy)\n")
    print("\n".join(markdown_table(keys, ([row[k] for k in keys] for row in rows))))
    by = {r.policy: r for r in runs}
    summary: dict[str, object] = {"rows": rows}
    if {"value", "always", "never"} <= by.keys():
        ours, always, never = (by[p].fleet for p in ("value", "always", "never"))
        reward = {p: by[p].fleet.expected_reward / max(by[p].fleet.steps, 1) for p in by}
        gain = reward["always"] - reward["never"]
        kept = (reward["value"] - reward["never"]) / gain if gain > 0 else float("nan")
        avoided = 1 - ours.paced_requests / max(always.paced_requests, 1)
        budget = by["value"].budget
        lines = [
            f"our realised request rate {ours.request_rate:.3f} vs budget {budget:.2f} "
            f"(AlwaysQ {always.request_rate:.3f}, NoQ {never.request_rate:.3f}: refills only)",
            f"cloud requests avoided vs AlwaysQ: {avoided:.1%}; app requests answered locally: "
            f"{ours.served_by['local']:,} of {ours.steps:,}",
            f"share of AlwaysQ's expected-reward gain over NoQ kept by ours: {kept:.1%} "
            f"(per step: ours {reward['value']:.4f}, AlwaysQ {reward['always']:.4f}, "
            f"NoQ {reward['never']:.4f})",
            f"failed app requests: {sum(r.fleet.failures for r in runs)}",
        ]
        print("\n" + "\n".join(f"- {line}" for line in lines))
        summary.update(kept_gain=kept, avoided=avoided, realised_rate=ours.request_rate,
                       budget=budget)  # fmt: skip
    if federated:
        print(
            f"- federated training on our devices: {federated['rounds_applied']} round(s) applied "
            f"by the aggregator; device passes: {federated['device_outcomes']}"
        )
        print_loop(federated)
        summary["federated"] = federated
    return summary


def _auc(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "–"


def print_loop(federated: dict[str, object]) -> None:
    """The model loop: each publication's gate decision, then the versions the cloud served
    over time with our fleet's expected reward per step under each."""
    pubs = federated.get("publications") or []
    served = federated.get("served") or []
    assert isinstance(pubs, list) and isinstance(served, list)
    print(f"\n## Model loop (gate on: {str(federated.get('validation', ''))[:70]}…)\n")
    if not pubs:
        print("- no federated round was applied while our fleet played: nothing published")
    keys = ["t (s)", "candidate", "fl version", "decision", "candidate AUC", "current AUC",
            "delta", "publish+gate (s)", "reason"]  # fmt: skip
    rows = [
        [p["t"], p.get("candidate", "–"), p["federated_version"],
         "error" if "error" in p else ("promoted" if p["promoted"] else "refused"),
         _auc(p.get("candidate_auc")), _auc(p.get("current_auc")), _auc(p.get("delta")),
         p["publish_and_gate_s"], p.get("error") or p.get("reason")]
        for p in pubs
    ]  # fmt: skip
    if rows:
        print("\n".join(markdown_table(keys, rows)))
    keys = ["served version", "from (s)", "to (s)", "our steps", "expected reward / step"]
    rows = [[w["version"], w["from_s"], w["to_s"], w["steps"], w["reward_per_step"]]
            for w in served]  # fmt: skip
    print("\nServed by the cloud over time (our policy's fleet, pass + play-on):\n")
    print("\n".join(markdown_table(keys, rows)))
    print(f"- registry the replica served from: {federated.get('registry')}")


def write_plot(runs: list[PolicyRun], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    names = [NAMES[r.policy] for r in runs]
    rewards = [r.fleet.expected_reward / max(r.fleet.steps, 1) for r in runs]
    rates = [r.fleet.request_rate for r in runs]
    axes[0].bar(names, rewards, color=["tab:green", "tab:blue", "tab:gray"][: len(runs)])
    axes[0].set_title("expected reward per feed step")
    axes[1].bar(names, rates, color=["tab:green", "tab:blue", "tab:gray"][: len(runs)])
    axes[1].axhline(runs[0].budget, color="red", linestyle="--", label="budget")
    axes[1].set_title("cloud requests per feed step")
    axes[1].legend()
    for r in runs:
        if r.fleet.latencies_ms:
            lat = np.sort(r.fleet.latencies_ms)
            axes[2].plot(lat, np.linspace(0, 1, len(lat)), label=NAMES[r.policy])
    axes[2].set_xscale("log")
    axes[2].set_title("app request latency (ms), CDF")
    axes[2].legend()
    for ax in axes[:2]:
        ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
