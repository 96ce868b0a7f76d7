"""GET /healthz (alive), /readyz (fit to take traffic) and /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_service.services.container import CloudServices


def router(services: CloudServices) -> APIRouter:
    api = APIRouter()

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    def readyz() -> JSONResponse:
        ready, detail = services.readiness.check()
        return JSONResponse(detail, status_code=200 if ready else 503)

    @api.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return api
