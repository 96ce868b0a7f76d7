"""Pydantic bodies <-> domain types for the REST transport."""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from cloud_service.api.schemas import (
    ContributionsOut,
    DeviceModelOut,
    EventsBody,
    RecommendBody,
    RecommendOut,
    RoundContributionsOut,
    ScoredDeviceOut,
    ScoredItemOut,
    VectorOut,
)
from cloud_service.domain import Behavior, Event, RankedList, RecommendQuery
from cloud_service.errors import InvalidArgument
from cloud_service.services.device_models import DeviceModelReply
from cloud_service.store.federated_state import RoundContributions
from protos.actions import BY_NAME


def query_from_body(body: RecommendBody) -> RecommendQuery:
    interest = None
    if body.interest is not None:
        try:
            interest = body.interest.array()
        except ValueError as exc:
            raise InvalidArgument(f"interest: {exc}") from None
    return RecommendQuery(
        device_id=body.device_id,
        k=body.k,
        recent=tuple(Behavior(b.item_id, BY_NAME[b.action], b.timestamp_ms) for b in body.recent),
        interest=interest,
        model_version=body.model_version,
        exclude=tuple(body.exclude_item_ids),
        **private_from_body(body),
    )


def private_from_body(body: RecommendBody) -> dict[str, Any]:
    """The private mode's fields of a body, as cloud_service.wire reads them from a proto."""
    if not body.private and body.interest_set is None and not body.interest_weights:
        return {}
    rows = None
    if body.interest_set is not None:
        try:
            rows = body.interest_set.array()
        except ValueError as exc:
            raise InvalidArgument(f"interest_set: {exc}") from None
    weights = np.array(body.interest_weights, dtype=np.float32) if body.interest_weights else None
    return {"private": body.private, "interest_set": rows, "interest_weights": weights}


def ranked_to_body(r: RankedList) -> RecommendOut:
    items = [
        ScoredItemOut(
            item_id=int(item), category_id=int(cat), ctr=float(ctr), ctcvr=float(ctcvr),
            score=float(score), embedding=VectorOut.of(row),
        )
        for item, cat, ctr, ctcvr, score, row in zip(
            r.item_ids, r.category_ids, r.ctr, r.ctcvr, r.score, r.rows, strict=True
        )
    ]  # fmt: skip
    return RecommendOut(
        items=items, model_version=r.model_version, embedding_version=r.embedding_version,
        request_id=r.request_id, degraded=r.degraded,
    )  # fmt: skip


def events_from_body(body: EventsBody) -> list[Event]:
    return [
        Event(
            e.item_id, BY_NAME[e.action], e.timestamp_ms, e.position, e.request_id,
            source=e.source, asked_cloud=e.asked_cloud, value=e.value, threshold=e.threshold,
            propensity=e.propensity, features=tuple(e.features), step=e.step,
        )
        for e in body.events
    ]  # fmt: skip


def device_model_to_body(reply: DeviceModelReply) -> DeviceModelOut:
    m = reply.model
    return DeviceModelOut(
        version=m.version, sha256=m.sha256, embedding_version=m.embedding_version,
        not_modified=reply.not_modified, kind=m.kind,
        onnx_model="" if reply.not_modified else base64.b64encode(m.onnx_model).decode(),
        manifest="" if reply.not_modified else m.manifest,
    )  # fmt: skip


def contributions_to_body(records: list[RoundContributions], k: int) -> ContributionsOut:
    """The `k` highest and lowest scores of each round (non-finite ones count as lowest)."""
    out = []
    for r in records:
        ranked = sorted(r.scores.items(), key=lambda kv: -math.inf if math.isnan(kv[1]) else kv[1])
        scored = [
            ScoredDeviceOut(device_id=d, score=None if math.isnan(s) else s) for d, s in ranked
        ]
        out.append(RoundContributionsOut(
            round_id=r.round_id, state=r.state, version=r.version, signal_version=r.signal_version,
            version_distance=r.version - r.signal_version, mode=r.mode, devices=len(r.scores),
            excluded=list(r.excluded), top=scored[::-1][:k], bottom=scored[:k], at_ms=r.at_ms,
        ))  # fmt: skip
    return ContributionsOut(rounds=out)
