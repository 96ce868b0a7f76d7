"""The cloud's REST app: /v1 routes mirroring the gRPC calls, health, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud_service.api.dashboard import dashboard_router
from cloud_service.api.handling import (
    error_response,
    http_error_response,
    validation_response,
)
from cloud_service.api.proto_schema import message_schemas
from cloud_service.api.routers import device_models, events, federated, health, recommend
from cloud_service.api.schemas import ErrorOut
from cloud_service.errors import TandemError
from cloud_service.services.container import CloudServices
from tandem_core.body_limit import BodyLimit

ERRORS = {c: {"model": ErrorOut} for c in (400, 401, 404, 413, 422, 429, 503)}


def create_app(services: CloudServices) -> FastAPI:
    app = FastAPI(title="Tandem cloud service", version="1", responses=ERRORS)  # type: ignore[arg-type]
    app.add_exception_handler(TandemError, error_response)
    app.add_exception_handler(RequestValidationError, validation_response)
    app.add_exception_handler(StarletteHTTPException, http_error_response)
    app.add_middleware(BodyLimit, max_bytes=services.settings.transport.http_max_body_bytes)
    app.include_router(dashboard_router(services.settings))
    for resource in (recommend, events, device_models, federated, health):
        app.include_router(resource.router(services))
    with_message_schemas(app)
    return app


def with_message_schemas(app: FastAPI) -> None:
    """The OpenAPI document also defines the protobuf messages the pull/push bodies are."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            document.setdefault("components", {}).setdefault("schemas", {}).update(
                message_schemas(*federated.MESSAGES)
            )
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
