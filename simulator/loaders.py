"""Loads and writes behaviour logs: Taobao UserBehavior CSV and MovieLens ratings."""

from __future__ import annotations

import csv
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

BEHAVIOR_CODES: dict[str, int] = {"pv": 0, "buy": 1, "cart": 2, "fav": 3}
BEHAVIOR_NAMES: dict[int, str] = {v: k for k, v in BEHAVIOR_CODES.items()}


class LogFormatError(ValueError):
    """A line of a log file does not have the expected layout."""

    def __init__(self, path: Path, line_no: int, line: str, why: str) -> None:
        super().__init__(f"{path}:{line_no}: {why}: {line.strip()[:200]!r}")
        self.path, self.line_no = path, line_no


@dataclass(frozen=True)
class BehaviorLog:
    """Behaviour events as parallel numpy arrays, in the Taobao UserBehavior schema."""

    user_id: np.ndarray  # int64
    item_id: np.ndarray  # int64
    category_id: np.ndarray  # int64
    behavior: np.ndarray  # int8 codes of BEHAVIOR_CODES
    timestamp: np.ndarray  # int64 seconds

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    def _take(self, index: np.ndarray) -> BehaviorLog:
        return BehaviorLog(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def sorted_by_time(self) -> BehaviorLog:
        return self._take(np.argsort(self.timestamp, kind="stable"))

    def time_split(self, fraction: float) -> tuple[BehaviorLog, BehaviorLog]:
        """(train, test): test holds the events at or after the `fraction` time quantile."""
        if not 0 < fraction < 1:
            raise ValueError("fraction must be in (0, 1)")
        ordered = self.sorted_by_time()
        cut = float(np.quantile(ordered.timestamp, fraction))
        is_test = ordered.timestamp > cut
        return ordered._take(~is_test), ordered._take(is_test)


def _parse_rows(path: Path, delimiter: str, n_fields: int, skip_header: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    with path.open(newline="") as handle:
        for line_no, line in enumerate(handle, start=1):
            if skip_header and line_no == 1:
                continue
            parts = line.rstrip("\r\n").split(delimiter)
            if len(parts) != n_fields:
                why = f"expected {n_fields} fields, got {len(parts)}"
                raise LogFormatError(path, line_no, line, why)
            rows.append(parts)
    return rows


def _ints(path: Path, rows: list[list[str]], column: int, offset: int) -> np.ndarray:
    try:
        return np.array([int(r[column]) for r in rows], dtype=np.int64)
    except ValueError:
        for i, r in enumerate(rows):
            if not r[column].strip().lstrip("-").isdigit():
                line = ",".join(r)
                why = f"field {column + 1} is not an integer"
                raise LogFormatError(path, i + offset, line, why) from None
        raise


def load_taobao_user_behavior(path: str | Path) -> BehaviorLog:
    """`user_id,item_id,category_id,behavior_type,timestamp` rows without a header."""
    path = Path(path)
    rows = _parse_rows(path, ",", 5, skip_header=False)
    codes = np.empty(len(rows), dtype=np.int8)
    for i, r in enumerate(rows):
        code = BEHAVIOR_CODES.get(r[3])
        if code is None:
            raise LogFormatError(path, i + 1, ",".join(r), f"unknown behavior type {r[3]!r}")
        codes[i] = code
    user, item, cat, ts = (_ints(path, rows, c, 1) for c in (0, 1, 2, 4))
    return BehaviorLog(user, item, cat, codes, ts)


def write_taobao_user_behavior(path: str | Path, log: BehaviorLog) -> None:
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        names = np.array([BEHAVIOR_NAMES[c] for c in range(len(BEHAVIOR_NAMES))])
        writer.writerows(
            zip(
                log.user_id.tolist(), log.item_id.tolist(), log.category_id.tolist(),
                names[log.behavior].tolist(), log.timestamp.tolist(), strict=True,
            )
        )  # fmt: skip


def load_movielens_ratings(path: str | Path) -> BehaviorLog:
    """MovieLens `ratings.dat` (UserID::MovieID::Rating::Timestamp) or `ratings.csv` (header).

    Every rating is a `pv` (the user engaged with the item); a rating ≥ 4 is also a `fav`.
    MovieLens has no categories here, so category_id is 0.
    """
    path = Path(path)
    is_csv = path.suffix == ".csv"
    rows = _parse_rows(path, "," if is_csv else "::", 4, skip_header=is_csv)
    offset = 2 if is_csv else 1
    user, item, ts = (_ints(path, rows, c, offset) for c in (0, 1, 3))
    try:
        rating = np.array([float(r[2]) for r in rows])
    except ValueError:
        bad = next(i for i, r in enumerate(rows) if not _is_float(r[2]))
        line = ",".join(rows[bad])
        raise LogFormatError(path, bad + offset, line, "rating is not a number") from None
    fav = rating >= 4
    pv = BehaviorLog(user, item, np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int8), ts)
    favs = BehaviorLog(
        user[fav], item[fav], np.zeros(int(fav.sum()), np.int64),
        np.full(int(fav.sum()), BEHAVIOR_CODES["fav"], np.int8), ts[fav],
    )  # fmt: skip
    both = {
        f.name: np.concatenate([getattr(pv, f.name), getattr(favs, f.name)]) for f in fields(pv)
    }
    return BehaviorLog(**both).sorted_by_time()


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
