"""The Tandem gRPC servicer: convert, call one domain service, map errors through errors.STATUS."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from cloud_service import metrics
from cloud_service.auth import TOKEN_HEADER
from cloud_service.errors import (
    BudgetExhausted,
    DeadlineExceeded,
    TandemError,
    Unavailable,
    status_of,
)
from cloud_service.services.container import CloudServices
from cloud_service.wire import (
    events_from_proto,
    query_from_proto,
    ranked_to_proto,
    secagg_stage,
    secagg_view_to_proto,
    submodel_to_proto,
    update_from_proto,
)
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc

T = TypeVar("T")
RETRY_AFTER_MS = "retry-after-ms"  # trailing metadata on RESOURCE_EXHAUSTED
MIN_TIME_LEFT_S = 0.002  # less than this left on the caller's deadline: do not start the work


def token_of(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata():
        if key == TOKEN_HEADER:
            return value if isinstance(value, str) else value.decode()
    return None


def handle(method: str, context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run one domain call; a TandemError aborts the RPC with its mapped status and message."""
    start = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        remaining = context.time_remaining()
        if remaining is not None and remaining < MIN_TIME_LEFT_S:
            raise DeadlineExceeded("deadline too close to start the work")
        return call()
    except TandemError as exc:
        code = grpc.StatusCode[status_of(exc)[0]]
        if isinstance(exc, BudgetExhausted):
            retry_ms = str(int(exc.retry_after_s * 1000) + 1)
            context.set_trailing_metadata(((RETRY_AFTER_MS, retry_ms),))
        context.abort(code, str(exc))
        raise  # unreachable: abort raises
    finally:
        metrics.REQUESTS.labels(method, "grpc", code.name).inc()
        metrics.LATENCY.labels(method, "grpc").observe(time.perf_counter() - start)


class TandemServicer(pb_grpc.TandemServicer):
    def __init__(self, services: CloudServices) -> None:
        self.s = services

    def Recommend(
        self, request: pb.RecommendRequest, context: grpc.ServicerContext
    ) -> pb.RecommendResponse:
        return handle("Recommend", context, lambda: ranked_to_proto(
            self.s.recommend.recommend(query_from_proto(request), token_of(context))
        ))  # fmt: skip

    def ReportEvents(
        self, request: pb.ReportEventsRequest, context: grpc.ServicerContext
    ) -> pb.ReportEventsResponse:
        def call() -> pb.ReportEventsResponse:
            receipt = self.s.events.report(
                request.device_id, events_from_proto(request), token_of(context),
                batch_id=request.batch_id,
            )  # fmt: skip
            return pb.ReportEventsResponse(accepted=receipt.accepted, duplicate=receipt.duplicate)

        return handle("ReportEvents", context, call)

    def GetDeviceModel(
        self, request: pb.DeviceModelRequest, context: grpc.ServicerContext
    ) -> pb.DeviceModelResponse:
        def call() -> pb.DeviceModelResponse:
            reply = self.s.device_models.get(
                request.device_id, request.current_version, token_of(context), request.kind
            )
            m = reply.model
            return pb.DeviceModelResponse(
                version=m.version, sha256=m.sha256, embedding_version=m.embedding_version,
                onnx_model=b"" if reply.not_modified else m.onnx_model,
                not_modified=reply.not_modified, kind=m.kind,
                manifest="" if reply.not_modified else m.manifest,
            )  # fmt: skip

        return handle("GetDeviceModel", context, call)

    def PullSubmodel(
        self, request: pb.PullRequest, context: grpc.ServicerContext
    ) -> pb.PullResponse:
        def call() -> pb.PullResponse:
            sub = self.s.require_federated().pull(
                request.device_id, request.round_id, list(request.item_ids), token_of(context)
            )
            return submodel_to_proto(sub)

        return handle("PullSubmodel", context, call)

    def PushUpdate(self, request: pb.PushRequest, context: grpc.ServicerContext) -> pb.PushResponse:
        def call() -> pb.PushResponse:
            receipt = self.s.require_federated().push(update_from_proto(request), token_of(context))
            return pb.PushResponse(
                accepted=receipt.accepted, reason=receipt.reason, stream_entry_id=receipt.entry_id
            )

        return handle("PushUpdate", context, call)

    def SecureAggregate(
        self, request: pb.SecAggRequest, context: grpc.ServicerContext
    ) -> pb.SecAggResponse:
        def call() -> pb.SecAggResponse:
            secure = self.s.require_federated().secure
            if secure is None:
                raise Unavailable("secure aggregation is not available on this replica")
            stage, payload = secagg_stage(request)
            view = secure.handle(
                request.device_id, request.round_id, stage, payload, token_of(context)
            )
            return secagg_view_to_proto(view)

        return handle("SecureAggregate", context, call)
