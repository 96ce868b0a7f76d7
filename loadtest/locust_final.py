"""Rewrites locust's `<prefix>_stats.csv` from the final stats when locust quits.

Locust's CSV writer runs once a second and closes its files at exit without a last write, so
the requests of the final second (and of users finishing within --stop-timeout) can be missing
from `_stats.csv`; the request counts must match what the agents served. Imported by the
locustfiles only (importing locust monkey-patches the process).
"""

from __future__ import annotations

import csv

from locust import events
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

_environments: list[Environment] = []


@events.init.add_listener
def _remember(environment: Environment, **_: object) -> None:
    _environments.append(environment)


@events.quit.add_listener
def _write_final_stats(**_: object) -> None:
    if not _environments:
        return
    env = _environments[-1]
    options = env.parsed_options
    prefix = getattr(options, "csv_prefix", None)
    if prefix and env.runner is not None and not getattr(options, "worker", False):
        with open(f"{prefix}_stats.csv", "w", newline="") as f:
            StatsCSV(env, PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))
