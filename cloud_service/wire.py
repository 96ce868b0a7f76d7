"""Protobuf messages <-> domain types: the one place they meet in the cloud.

The gRPC transport uses every function; REST uses the federated ones, whose bodies are the same
messages in proto3 JSON (bytes as base64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloud_service.domain import Behavior, Event, RankedList, RecommendQuery
from cloud_service.errors import InvalidArgument
from cloud_service.services.federated import Submodel
from cloud_service.services.secure_aggregation import SecAggView
from cloud_service.validation import MAX_INTEREST_SET, parse_action
from protos.actions import to_wire
from protos.tandem.v1 import tandem_pb2 as pb
from protos.vectors import (
    matrix_from_proto,
    matrix_to_proto,
    tensor_to_proto,
    vector_from_proto,
    vector_to_proto,
)
from tandem_core.federated import update as update_codec
from tandem_core.federated.update import InvalidUpdate, ModelUpdate


def query_from_proto(req: pb.RecommendRequest) -> RecommendQuery:
    interest = None
    if req.HasField("interest"):
        try:
            interest = vector_from_proto(req.interest, max_floats=4096)
        except ValueError as exc:
            raise InvalidArgument(f"interest: {exc}") from None
    return RecommendQuery(
        device_id=req.device_id,
        k=req.k,
        recent=tuple(
            Behavior(b.item_id, parse_action(b.action, "recent"), b.timestamp_ms)
            for b in req.recent
        ),
        interest=interest,
        model_version=req.model_version,
        exclude=tuple(req.exclude_item_ids),
        **private_from_proto(req),
    )


def private_from_proto(req: pb.RecommendRequest) -> dict[str, Any]:
    """The private mode's fields of a request (validation.check_private judges them)."""
    if not req.private and not req.HasField("interest_set") and not req.interest_weights:
        return {}
    rows = None
    if req.HasField("interest_set"):
        try:
            rows = matrix_from_proto(req.interest_set, max_floats=MAX_INTEREST_SET * 4096)
        except ValueError as exc:
            raise InvalidArgument(f"interest_set: {exc}") from None
    weights = np.array(req.interest_weights, dtype=np.float32) if req.interest_weights else None
    return {"private": req.private, "interest_set": rows, "interest_weights": weights}


def ranked_to_proto(r: RankedList) -> pb.RecommendResponse:
    items = [
        pb.ScoredItem(
            item_id=int(item), category_id=int(cat), ctr=float(ctr), ctcvr=float(ctcvr),
            score=float(score), embedding=vector_to_proto(row),
        )
        for item, cat, ctr, ctcvr, score, row in zip(
            r.item_ids, r.category_ids, r.ctr, r.ctcvr, r.score, r.rows, strict=True
        )
    ]  # fmt: skip
    return pb.RecommendResponse(
        items=items, model_version=r.model_version, embedding_version=r.embedding_version,
        request_id=r.request_id, degraded=r.degraded,
    )  # fmt: skip


def events_from_proto(req: pb.ReportEventsRequest) -> list[Event]:
    return [
        Event(
            e.item_id, parse_action(e.action, "events"), e.timestamp_ms, e.position, e.request_id,
            source=e.source, asked_cloud=e.asked_cloud, value=e.value, threshold=e.threshold,
            propensity=e.propensity or 1.0,  # 0 = unset: nothing randomised
            features=tuple(e.features), step=e.step,
        )
        for e in req.events
    ]  # fmt: skip


def event_to_proto(e: Event) -> pb.Event:
    """The inverse of one element of events_from_proto (round-trip tests, replay tools)."""
    return pb.Event(
        item_id=e.item_id, action=to_wire(e.action), timestamp_ms=e.timestamp_ms,
        position=e.position, request_id=e.request_id, source=e.source,
        asked_cloud=e.asked_cloud, value=e.value, threshold=e.threshold, propensity=e.propensity,
        features=e.features, step=e.step,
    )  # fmt: skip


def submodel_to_proto(sub: Submodel) -> pb.PullResponse:
    rnd = sub.round
    return pb.PullResponse(
        item_ids=sub.item_ids.tolist(), rows=matrix_to_proto(sub.rows),
        dense=[tensor_to_proto(n, a) for n, a in sorted(sub.dense.items())],
        model_version=f"fl-{sub.version}", base_version=sub.version,
        round_id=rnd.round_id if rnd else "", selected=sub.selected,
        deadline_ms=rnd.deadline_ms if rnd else 0,
        secure=sub.secure.to_proto() if sub.secure is not None else None,
    )  # fmt: skip


def secagg_stage(req: pb.SecAggRequest) -> tuple[str, bytes]:
    """(stage name, its message's bytes) of a SecureAggregate call; ('', b'') for a poll."""
    which = req.WhichOneof("stage")
    if which is None:
        return "", b""
    return which, getattr(req, which).SerializeToString(deterministic=True)


def secagg_view_to_proto(v: SecAggView) -> pb.SecAggResponse:
    return pb.SecAggResponse(
        phase=v.phase, accepted=v.accepted, reason=v.reason,
        params=v.params.to_proto() if v.params is not None else None,
        roster=[pb.SecAggRosterEntry(device_id=d, c_pk=c, s_pk=k) for d, c, k in v.roster],
        inbox=[pb.SecAggShare(peer=p, ciphertext=c) for p, c in v.inbox],
        intersections=[
            pb.SecAggIntersection(peer=p, item_ids=ids.tolist())
            for p, ids in sorted(v.intersections.items())
        ],
        survivors=v.survivors, dropped=v.dropped, phase_deadline_ms=v.deadline_ms,
    )  # fmt: skip


def update_from_proto(msg: pb.PushRequest) -> ModelUpdate:
    """The push decoded once, at the edge; the service checks it and stores its encoding."""
    try:
        return update_codec.from_proto(msg)
    except InvalidUpdate as exc:
        raise InvalidArgument(str(exc)) from None
