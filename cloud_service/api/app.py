"""The cloud's REST app: /v1 routes mirroring the gRPC calls, health, readiness and metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_service import metrics
from cloud_service.api.body_limit import BodyLimit
from cloud_service.api.dashboard import dashboard_router
from cloud_service.api.schemas import (
    DeviceModelOut,
    ErrorOut,
    EventsBody,
    EventsOut,
    RecommendBody,
    RecommendOut,
)
from cloud_service.api.serde import (
    device_model_to_body,
    events_from_body,
    query_from_body,
    ranked_to_body,
)
from cloud_service.errors import BudgetExhausted, InvalidArgument, TandemError, status_of
from cloud_service.services.container import CloudServices
from cloud_service.wire import submodel_to_proto, update_from_proto
from protos.tandem.v1 import tandem_pb2 as pb

Token = Annotated[str | None, Header(alias="x-device-token")]
ERRORS = {c: {"model": ErrorOut} for c in (401, 404, 422, 429, 503)}


@contextmanager
def observed(method: str) -> Iterator[None]:
    start = time.perf_counter()
    code = "OK"
    try:
        yield
    except TandemError as exc:
        code = status_of(exc)[0]
        raise
    finally:
        metrics.REQUESTS.labels(method, "rest", code).inc()
        metrics.LATENCY.labels(method, "rest").observe(time.perf_counter() - start)


M = TypeVar("M", bound=Message)


def proto_from_json(body: dict[str, Any], message: M) -> M:
    try:
        return json_format.ParseDict(body, message)
    except json_format.ParseError as exc:
        raise InvalidArgument(f"malformed body: {exc}") from None


def error_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TandemError)
    status_name, http_status = status_of(exc)
    headers = {}
    body = {"error": status_name, "detail": str(exc)}
    if isinstance(exc, BudgetExhausted):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        body["retry_after_ms"] = str(int(exc.retry_after_s * 1000) + 1)
    return JSONResponse(body, status_code=http_status, headers=headers)


def create_app(services: CloudServices) -> FastAPI:
    app = FastAPI(title="Tandem cloud service", version="1", responses=ERRORS)  # type: ignore[arg-type]
    app.add_exception_handler(TandemError, error_response)
    app.add_middleware(BodyLimit, max_bytes=services.settings.http_max_body_bytes)
    app.include_router(dashboard_router(services.settings))

    @app.post("/v1/recommend", response_model=RecommendOut)
    def recommend(body: RecommendBody, x_device_token: Token = None) -> RecommendOut:
        with observed("Recommend"):
            ranked = services.recommend.recommend(query_from_body(body), x_device_token)
            return ranked_to_body(ranked)

    @app.post("/v1/events", response_model=EventsOut)
    def report_events(body: EventsBody, x_device_token: Token = None) -> EventsOut:
        with observed("ReportEvents"):
            n = services.events.report(body.device_id, events_from_body(body), x_device_token)
            return EventsOut(accepted=n)

    @app.get("/v1/device-model", response_model=DeviceModelOut)
    def device_model(
        device_id: Annotated[str, Query(max_length=64)],
        current_version: Annotated[str, Query(max_length=128)] = "",
        x_device_token: Token = None,
    ) -> DeviceModelOut:
        with observed("GetDeviceModel"):
            reply = services.device_models.get(device_id, current_version, x_device_token)
            return device_model_to_body(reply)

    # The federated calls mirror the protobuf messages in their proto3 JSON form (bytes as
    # base64), so REST and gRPC share one schema for these binary-heavy bodies.
    @app.post("/v1/submodel/pull")
    def pull_submodel(body: dict[str, Any], x_device_token: Token = None) -> dict[str, Any]:
        with observed("PullSubmodel"):
            req = proto_from_json(body, pb.PullRequest())
            sub = services.require_federated().pull(
                req.device_id, req.round_id, list(req.item_ids), x_device_token
            )
            return json_format.MessageToDict(submodel_to_proto(sub))

    @app.post("/v1/submodel/push")
    def push_update(body: dict[str, Any], x_device_token: Token = None) -> dict[str, Any]:
        with observed("PushUpdate"):
            push = update_from_proto(proto_from_json(body, pb.PushRequest()))
            receipt = services.require_federated().push(push, x_device_token)
            return {"accepted": receipt.accepted, "reason": receipt.reason,
                    "stream_entry_id": receipt.entry_id}  # fmt: skip

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ready, detail = services.readiness.check()
        return JSONResponse(detail, status_code=200 if ready else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
