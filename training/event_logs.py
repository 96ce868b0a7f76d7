"""Training logs from the cloud's event stream: a Redis consumer group writes CSV files, then acks.

`python -m training.event_logs --redis redis://127.0.0.1:6379/0 --out logs/ [--tables
artifacts/ranker/serving/tables.npz] [--once]`

Two files per part, rotated every `--rows-per-file` events, at most `--max-files` parts kept
(the oldest deleted: the retention bound):

- `user_behavior-NNNNNN.csv`: the Taobao UserBehavior layout (user_id,item_id,category_id,
  behavior_type,timestamp; no header, seconds), readable by
  `simulator.loaders.load_taobao_user_behavior`. Clicks are `pv`, purchases `buy`; exposures
  are not in that schema and appear only in the second file.
- `decisions-NNNNNN.csv` (with a header): every event, exposures included, with what the policy
  needs: the stream entry id, device, user id, slot on the page, request id, the decision
  (source, asked_cloud, value, threshold, propensity), the batch id, the device's page counter
  `step` (0 = unset) and the decision's `features` (space-separated, "" when none). Read into
  per-decision rows by `training.policy.fleet_logs.decision_rows`.

Entries are acknowledged only after their rows are written and fsynced, so a crash re-delivers
them (at least once: rows can repeat across a crash; `entry_id` identifies them). The cloud's
batch ids already make the stream itself free of retried duplicates.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from cloud_service.store.keys import Keys
from cloud_service.store.redis_store import RedisClient, build_redis
from protos.actions import BY_NAME, NAMES, Action

# simulator.loaders.BEHAVIOR_CODES names; exposures have no Taobao type
TAOBAO_TYPE = {Action.CLICK: "pv", Action.PURCHASE: "buy"}
DECISION_COLUMNS = (
    "entry_id", "device", "user_id", "item_id", "category_id", "action", "timestamp_ms",
    "position", "request_id", "source", "asked_cloud", "value", "threshold", "propensity",
    "batch_id", "step", "features",
)  # fmt: skip
GROUP = "training-logs"


def user_id(device: str) -> int:
    """A stable integer id for a device id (Taobao wants integers): the number itself when the
    id is one, else 62 bits of its sha256."""
    if device.isdigit() and len(device) < 18:
        return int(device)
    return int.from_bytes(hashlib.sha256(device.encode()).digest()[:8], "big") >> 2


@dataclass
class LogWriter:
    """Appends rows to the current part, rotates past `rows_per_file`, keeps `max_files` parts."""

    out: Path
    rows_per_file: int
    max_files: int
    categories: np.ndarray | None = None
    part: int = 0
    rows_in_part: int = 0
    written: int = field(default=0)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        parts = sorted(self._parts())
        self.part = parts[-1] + 1 if parts else 1  # never append to a file another run wrote

    def _parts(self) -> list[int]:
        return [int(p.stem.rsplit("-", 1)[1]) for p in self.out.glob("decisions-*.csv")]

    def _paths(self, part: int) -> tuple[Path, Path]:
        return (self.out / f"user_behavior-{part:06d}.csv", self.out / f"decisions-{part:06d}.csv")

    def write(self, entries: Sequence[tuple[str, dict[str, str]]]) -> None:
        i = 0
        while i < len(entries):
            if self.rows_in_part >= self.rows_per_file:
                self.part, self.rows_in_part = self.part + 1, 0
            room = self.rows_per_file - self.rows_in_part
            chunk = entries[i : i + room]
            self._append(chunk)
            self.rows_in_part += len(chunk)
            i += len(chunk)
        self.written += len(entries)
        self._retain()

    def _append(self, entries: Sequence[tuple[str, dict[str, str]]]) -> None:
        behavior_path, decisions_path = self._paths(self.part)
        new = not decisions_path.exists()
        with behavior_path.open("a", newline="") as b, decisions_path.open("a", newline="") as d:
            behavior, decisions = csv.writer(b, lineterminator="\n"), csv.writer(d)
            if new:
                decisions.writerow(DECISION_COLUMNS)
            for entry_id, f in entries:
                action, item, ts_ms = BY_NAME[f["action"]], int(f["item"]), int(f["ts"])
                category = int(self.categories[item]) if self.categories is not None else 0
                user = user_id(f["device"])
                if action in TAOBAO_TYPE:
                    behavior.writerow((user, item, category, TAOBAO_TYPE[action], ts_ms // 1000))
                decisions.writerow((
                    entry_id, f["device"], user, item, category, NAMES[action], ts_ms,
                    f["position"], f["request"], f["source"], f["asked"], f["value"],
                    f["threshold"], f["propensity"], f["batch"], f.get("step", "0"),
                    f.get("features", ""),
                ))  # fmt: skip
            for handle in (b, d):
                handle.flush()
                os.fsync(handle.fileno())

    def _retain(self) -> None:
        for part in sorted(self._parts())[: -self.max_files]:
            for path in self._paths(part):
                path.unlink(missing_ok=True)


def ensure_group(client: RedisClient, stream: str, group: str) -> None:
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def decode(entries: Any) -> list[tuple[str, dict[str, str]]]:
    return [
        (eid.decode(), {k.decode(): v.decode() for k, v in fields.items()})
        for eid, fields in entries
    ]


def consume(
    client: RedisClient, stream: str, writer: LogWriter, group: str = GROUP,
    consumer: str = "logs-0", count: int = 1000, block_ms: int | None = None,
    max_events: int | None = None,
) -> int:  # fmt: skip
    """Write and ack entries until none arrive within `block_ms` (None: none waiting) or
    `max_events` were written; first this consumer's pending ones (delivered, never acked)."""
    ensure_group(client, stream, group)
    done, cursor = 0, "0"  # "0": our pending entries first; then ">" for new ones
    while max_events is None or done < max_events:
        reply: Any = client.xreadgroup(group, consumer, {stream: cursor}, count=count,
                                       block=block_ms if cursor == ">" else None)  # fmt: skip
        entries = decode(reply[0][1]) if reply else []
        if not entries:
            if cursor == ">":
                return done
            cursor = ">"
            continue
        writer.write(entries)
        client.xack(stream, group, *[eid for eid, _ in entries])
        done += len(entries)
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--cluster", action="store_true", help="--redis is a node of a Redis Cluster")
    p.add_argument("--prefix", default="tandem", help="the cloud's CLOUD_KEY_PREFIX")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tables", type=Path, help="the serving bundle's tables.npz (categories)")
    p.add_argument("--group", default=GROUP)
    p.add_argument("--consumer", default=socket.gethostname())
    p.add_argument("--rows-per-file", type=int, default=1_000_000)
    p.add_argument("--max-files", type=int, default=30)
    p.add_argument("--once", action="store_true", help="stop when the stream is drained")
    p.add_argument("--block-ms", type=int, default=2000)
    args = p.parse_args(argv)
    categories = None
    if args.tables is not None:
        categories = np.load(args.tables)["item_category"]
    writer = LogWriter(args.out, args.rows_per_file, args.max_files, categories)
    client = build_redis(args.redis, socket_timeout_s=args.block_ms / 1000 + 5, retries=3,
                         cluster=args.cluster)  # fmt: skip
    stream = Keys(args.prefix).events()
    try:
        while True:
            consume(client, stream, writer, args.group, args.consumer,
                    block_ms=None if args.once else args.block_ms)  # fmt: skip
            if args.once:
                break
    except KeyboardInterrupt:
        pass
    print(f"{writer.written} events written to {args.out} (part {writer.part})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
