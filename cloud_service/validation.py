"""Checks on every input from outside; each failure is an InvalidArgument naming the field."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from cloud_service.domain import Action, Behavior, Event, RecommendQuery
from cloud_service.errors import InvalidArgument
from protos.actions import from_wire

MAX_REQUEST_ID = 64
MAX_TIMESTAMP_MS = 1 << 50  # far future; rejects garbage, not clocks
MAX_DECISION = 1e6  # |value|, |threshold|, |feature|: far beyond any scale; rejects garbage
MAX_FEATURES = 32  # request-value features of a decision (12 today)
MAX_STEP = 10**9  # a device session's page counter
SOURCES = ("", "cloud", "local")
BATCH_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # no braces: it goes inside a Redis key
MAX_INTEREST_SET = 16  # rows of a private request's pseudo-history (the encoder sends 4)
# |x| of a private request's vectors: the shipped rows are O(1); far beyond them is garbage
MAX_INTEREST_ABS = 100.0
MAX_INTEREST_WEIGHT = 1000.0  # clicks one pseudo-history row may stand for


def check_items(ids: np.ndarray, n_items: int, what: str) -> None:
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= n_items):
        bad = int(ids[(ids < 0) | (ids >= n_items)][0])
        raise InvalidArgument(f"{what}: unknown item id {bad} (catalogue has {n_items} items)")


def check_behaviors(recent: Sequence[Behavior], limit: int, n_items: int) -> None:
    if len(recent) > limit:
        raise InvalidArgument(f"recent: {len(recent)} behaviours, more than the limit of {limit}")
    check_items(np.array([b.item_id for b in recent], dtype=np.int64), n_items, "recent")
    for b in recent:
        if not 0 <= b.timestamp_ms < MAX_TIMESTAMP_MS:
            raise InvalidArgument(f"recent: timestamp_ms {b.timestamp_ms} out of range")


def check_query(
    q: RecommendQuery, n_items: int, dim: int, max_k: int, limits: dict[str, int]
) -> None:
    if not 1 <= q.k <= max_k:
        raise InvalidArgument(f"k must be between 1 and {max_k}, got {q.k}")
    check_behaviors(q.recent, limits["recent"], n_items)
    if len(q.exclude) > limits["exclude"]:
        raise InvalidArgument(f"exclude_item_ids: more than the limit of {limits['exclude']}")
    check_items(np.asarray(q.exclude, dtype=np.int64), n_items, "exclude_item_ids")
    if q.interest is not None:
        if q.interest.shape != (dim,):
            raise InvalidArgument(f"interest: expected dim {dim}, got {q.interest.shape[0]}")
        if not np.all(np.isfinite(q.interest)):
            raise InvalidArgument("interest contains NaN or infinite values")
    if q.private:
        check_private(q, dim)
    elif q.interest_set is not None or q.interest_weights is not None:
        raise InvalidArgument("interest_set and interest_weights are for private requests only")


def check_private(q: RecommendQuery, dim: int) -> None:
    """A private request carries no behaviour ids, and a bounded, finite pseudo-history."""
    if q.recent:
        raise InvalidArgument("recent: a private request carries no behaviour (send interest_set)")
    if q.interest is not None and not np.all(np.abs(q.interest) <= MAX_INTEREST_ABS):
        raise InvalidArgument(f"interest: values must be within ±{MAX_INTEREST_ABS:g}")
    rows, weights = q.interest_set, q.interest_weights
    if rows is None:
        if weights is not None and len(weights):
            raise InvalidArgument("interest_weights without an interest_set")
        return
    if rows.ndim != 2 or not 1 <= rows.shape[0] <= MAX_INTEREST_SET:
        raise InvalidArgument(f"interest_set: 1 to {MAX_INTEREST_SET} rows, got {rows.shape[0]}")
    if rows.shape[1] != dim:
        raise InvalidArgument(f"interest_set: expected dim {dim}, got {rows.shape[1]}")
    if not np.all(np.isfinite(rows)) or not np.all(np.abs(rows) <= MAX_INTEREST_ABS):
        raise InvalidArgument(
            f"interest_set: values must be finite and within ±{MAX_INTEREST_ABS:g}"
        )
    if weights is None or weights.shape != (rows.shape[0],):
        raise InvalidArgument("interest_weights: one weight per row of interest_set")
    if not np.all(np.isfinite(weights)) or not np.all(
        (weights >= 0) & (weights <= MAX_INTEREST_WEIGHT)
    ):
        raise InvalidArgument(f"interest_weights: each finite, 0 to {MAX_INTEREST_WEIGHT:g}")


def check_events(events: Sequence[Event], limit: int, n_items: int) -> None:
    if not events:
        raise InvalidArgument("events: empty batch")
    if len(events) > limit:
        raise InvalidArgument(f"events: {len(events)} events, more than the limit of {limit}")
    check_items(np.array([e.item_id for e in events], dtype=np.int64), n_items, "events")
    for e in events:
        if e.action not in tuple(Action):
            raise InvalidArgument("events: action must be EXPOSURE, CLICK or PURCHASE")
        if not 0 <= e.timestamp_ms < MAX_TIMESTAMP_MS:
            raise InvalidArgument(f"events: timestamp_ms {e.timestamp_ms} out of range")
        if not 0 <= e.position < 10_000:
            raise InvalidArgument(f"events: position {e.position} out of range")
        if len(e.request_id) > MAX_REQUEST_ID:
            raise InvalidArgument("events: request_id longer than 64 characters")
        check_decision(e)


def check_decision(e: Event) -> None:
    """The logged decision: a known source, finite numbers, a propensity in (0, 1], at most
    32 finite features, a page counter up to 10^9."""
    if e.source not in SOURCES:
        raise InvalidArgument("events: source must be 'cloud', 'local' or empty")
    if not all(math.isfinite(x) and abs(x) < MAX_DECISION for x in (e.value, e.threshold)):
        raise InvalidArgument("events: value and threshold must be finite (|x| < 1e6)")
    if not (math.isfinite(e.propensity) and 0.0 < e.propensity <= 1.0):
        raise InvalidArgument("events: propensity must be in (0, 1]")
    if len(e.features) > MAX_FEATURES:
        raise InvalidArgument(
            f"events: {len(e.features)} features, more than the limit of {MAX_FEATURES}"
        )
    if not all(math.isfinite(x) and abs(x) <= MAX_DECISION for x in e.features):
        raise InvalidArgument("events: features must be finite (|x| <= 1e6)")
    if not 0 <= e.step <= MAX_STEP:
        raise InvalidArgument(f"events: step {e.step} out of range (0 to 10^9)")


def check_batch_id(batch_id: str) -> None:
    if batch_id and not BATCH_ID.fullmatch(batch_id):
        raise InvalidArgument("batch_id must be 1-64 characters of [A-Za-z0-9_.:-] (or empty)")


def parse_action(value: int, what: str) -> Action:
    """A wire action number as an Action; UNSPECIFIED (0) and unknown numbers are refused."""
    try:
        return from_wire(int(value))
    except ValueError:
        raise InvalidArgument(f"{what}: action must be EXPOSURE, CLICK or PURCHASE") from None
