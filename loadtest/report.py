"""The load report: locust CSVs + the cloud-rate samples → loadtest.md (table) and loadtest.png.

python -m loadtest.report artifacts/loadtest
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.sampler import Sample, read_samples

RECOMMEND = "/v1/recommend"


@dataclass(frozen=True)
class EndpointStats:
    """One row of locust's `<prefix>_stats.csv`; latencies in ms."""

    name: str
    requests: int
    failures: int
    rps: float
    p50: float
    p95: float
    p99: float


@dataclass(frozen=True)
class HistoryPoint:
    """One row of `<prefix>_stats_history.csv` (current window, not cumulative)."""

    timestamp: int
    users: int
    rps: float
    p50: float
    p95: float
    p99: float


@dataclass(frozen=True)
class LevelRow:
    budget: float
    users: int
    rps: float
    p50: float
    p95: float
    p99: float
    requests: int  # every locust request (events + recommend)
    failures: int
    app_recommends: int
    agent_steps: int
    cloud_calls: int  # Recommend calls the cloud received over gRPC (any outcome)
    first_lists: int  # a device's first list: not a request in the agents' budget
    paced_rate: float  # the agents' budgeted requests / steps (cross-check of cloud_rate)
    tolerance: float

    @property
    def cloud_share(self) -> float:
        """Cloud Recommend calls / app recommend requests."""
        return self.cloud_calls / self.app_recommends if self.app_recommends else math.nan

    @property
    def cloud_rate(self) -> float:
        """The realised request rate the budget bounds: as cloud_share, first lists excluded."""
        calls = self.cloud_calls - self.first_lists
        return calls / self.app_recommends if self.app_recommends else math.nan

    @property
    def within_budget(self) -> bool:
        return self.cloud_rate <= self.budget + self.tolerance


def _number(text: str) -> float:
    return float("nan") if text in ("", "N/A") else float(text)


def read_stats(path: Path) -> dict[str, EndpointStats]:
    """Locust's stats CSV by endpoint name; the total row is under "Aggregated"."""
    with path.open(newline="") as f:
        return {
            r["Name"]: EndpointStats(
                r["Name"], int(r["Request Count"]), int(r["Failure Count"]),
                _number(r["Requests/s"]), _number(r["50%"]), _number(r["95%"]), _number(r["99%"]),
            )
            for r in csv.DictReader(f)
        }  # fmt: skip


def read_history(path: Path, name: str = RECOMMEND) -> list[HistoryPoint]:
    """The history rows of one endpoint (needs locust's --csv-full-history for endpoints)."""
    with path.open(newline="") as f:
        return [
            HistoryPoint(
                int(r["Timestamp"]), int(r["User Count"]), _number(r["Requests/s"]),
                _number(r["50%"]), _number(r["95%"]), _number(r["99%"]),
            )
            for r in csv.DictReader(f)
            if r["Name"] == name
        ]  # fmt: skip


def level_row(out: Path, level: dict[str, Any], tolerance: float) -> LevelRow:
    stats = read_stats(out / f"{level['tag']}_stats.csv")
    rec, total = stats[RECOMMEND], stats["Aggregated"]
    steps = int(level["app_steps"])
    return LevelRow(
        budget=float(level["budget"]), users=int(level["users"]), rps=rec.rps, p50=rec.p50,
        p95=rec.p95, p99=rec.p99, requests=total.requests, failures=total.failures,
        app_recommends=rec.requests, agent_steps=steps, cloud_calls=int(level["cloud_recommends"]),
        first_lists=int(level["outcomes"].get("initial", 0)),
        paced_rate=level["paced_requests"] / steps if steps else math.nan, tolerance=tolerance,
    )  # fmt: skip


def level_rows(out: Path) -> list[LevelRow]:
    run = json.loads((out / "run.json").read_text())
    return [level_row(out, lv, float(run["tolerance"])) for lv in run["levels"]]


def all_within(out: Path) -> bool:
    """No failed request, every app request answered, every level within its budget."""
    rows = level_rows(out)
    answered = all(r.app_recommends == r.agent_steps for r in rows)
    return answered and all(r.failures == 0 and r.within_budget for r in rows)


TABLE_HEAD = (
    "| budget | users | recommend/s | p50 ms | p95 ms | p99 ms | requests | failures "
    "| cloud calls / app recommends | without first lists | agents' paced rate | within budget |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|"
)


def table(rows: list[LevelRow]) -> str:
    lines = [TABLE_HEAD]
    for r in rows:
        ok = "yes" if r.within_budget else f"no (> {r.budget + r.tolerance:.2f})"
        lines.append(
            f"| {r.budget:.2f} | {r.users} | {r.rps:.1f} | {r.p50:.0f} | {r.p95:.0f} | "
            f"{r.p99:.0f} | {r.requests} | {r.failures} | {r.cloud_share:.3f} | "
            f"{r.cloud_rate:.3f} | {r.paced_rate:.3f} | {ok} |"
        )
    return "\n".join(lines)


def open_loop_text(o: dict[str, Any]) -> str:
    if not o:
        return ""
    lag_note = (
        " (large: the driver, not only the system, fell behind)"
        if o["driver_lag_p99_ms"] > 0.25 * o["p99_ms"]
        else " (small beside the p99: the figure is the system's)"
    )
    return (
        f"\n## Open loop (fixed arrival rate, budget {o['budget']:.2f})\n\n"
        f"{o['rate']} feed steps/s for {o['seconds']:.0f} s over {o['devices']} devices: "
        f"{o['sent']} sent, {o['answered']} answered, {o['failures']} failed.\n"
        f"Latency from the intended send time (coordinated-omission safe): "
        f"p50 {o['p50_ms']:.1f} ms, p95 {o['p95_ms']:.1f} ms, **p99 {o['p99_ms']:.1f} ms**, "
        f"max {o['max_ms']:.1f} ms; service time alone p50 {o['service_p50_ms']:.1f} ms, "
        f"p99 {o['service_p99_ms']:.1f} ms; waiting behind the device's previous step p99 "
        f"{o['device_wait_p99_ms']:.1f} ms; the driver's own lag p99 "
        f"{o['driver_lag_p99_ms']:.1f} ms{lag_note}.\n"
    )


def grpc_text(out: Path, g: dict[str, Any]) -> str:
    path = out / "grpc_stats.csv"
    if not g or not path.exists():
        return ""
    lines = [
        f"\n## gRPC users on the cloud ({g['users']} users, {g['duration_s']:.0f} s)\n",
        "| call | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in read_stats(path).values():
        lines.append(
            f"| {s.name} | {s.requests} | {s.failures} | {s.rps:.1f} | {s.p50:.0f} | "
            f"{s.p95:.0f} | {s.p99:.0f} |"
        )
    return "\n".join(lines) + "\n"


def markdown(out: Path) -> str:
    run = json.loads((out / "run.json").read_text())
    rows = level_rows(out)
    return (
        "# Load test of the request budget\n\n"
        f"`{run['command']}` (world `{run['world_scale']}`, value model: "
        f"{'onnx' if run['value_model'] else 'shift score'}, {run['seconds']:.0f} s)\n\n"
        "Closed loop: locust app users (one device each), `POST /v1/events` then "
        "`POST /v1/recommend` per feed step; latencies of `/v1/recommend` as locust measured "
        "them (whole run, ramp-up included). Cloud calls: the cloud's own count of gRPC "
        "Recommend calls (any outcome). A device's first list is not a request in the budget "
        "(the agent must have a list to show anything), so the budget bounds the cloud calls "
        "without first lists; the agents' paced rate is their own count of the same, a "
        f"cross-check. Tolerance: +{run['tolerance']:.2f} (λ starts at 0 and learns).\n\n"
        f"{table(rows)}\n{open_loop_text(run.get('open_loop', {}))}"
        f"{grpc_text(out, run.get('grpc', {}))}"
    )


def share_series(samples: list[Sample]) -> tuple[list[float], list[float], list[float]]:
    """Per sampling interval: time, cloud calls / app steps, agents' paced requests / steps."""
    ts, cloud, paced = [], [], []
    for a, b in itertools.pairwise(samples):
        steps = b.app_steps - a.app_steps
        if steps > 0:
            ts.append(b.t_s)
            cloud.append((b.cloud_recommends - a.cloud_recommends) / steps)
            paced.append((b.paced_requests - a.paced_requests) / steps)
    return ts, cloud, paced


def plot(out: Path, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = json.loads((out / "run.json").read_text())
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for i, lv in enumerate(run["levels"]):
        color = f"C{i}"
        hist = read_history(out / f"{lv['tag']}_stats_history.csv")
        t = [h.timestamp - hist[0].timestamp for h in hist] if hist else []
        axes[0].plot(t, [h.rps for h in hist], color=color, label=f"budget {lv['budget']:.2f}")
        axes[1].plot(t, [h.p50 for h in hist], color=color, ls=":", label=f"{lv['budget']:.2f} p50")
        axes[1].plot(t, [h.p99 for h in hist], color=color, label=f"{lv['budget']:.2f} p99")
        ts, cloud, paced = share_series(read_samples(out / f"{lv['tag']}_samples.csv"))
        axes[2].plot(ts, cloud, color=color, label=f"cloud calls, budget {lv['budget']:.2f}")
        paced_label = "dotted: the agents' own count" if i == 0 else None
        axes[2].plot(ts, paced, color=color, ls=":", lw=1, label=paced_label)
        axes[2].axhline(lv["budget"], color=color, ls="--", lw=1)
    titles = ("recommend requests/s", "recommend latency (ms, locust window)",
              "share of feed steps asking the cloud, per second (dashed: budget)")  # fmt: skip
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("s since start of level")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def write(out: Path) -> tuple[Path, Path]:
    md = out / "loadtest.md"
    md.write_text(markdown(out))
    return md, plot(out, out / "loadtest.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path, nargs="?", default=Path("artifacts/loadtest"))
    md, png = write(p.parse_args(argv).out)
    print(md.read_text())
    print(f"report: {md}; plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
