"""The agent's REST app: thin routes over AgentService."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from device_agent import metrics
from device_agent.api.app_auth import SCHEME, AppAuth, AppUnauthorized, OpsAuth
from device_agent.api.schemas import (
    DecisionOut,
    ErrorOut,
    EventsIn,
    EventsOut,
    ItemOut,
    RecommendIn,
    RecommendOut,
    bounded,
)
from device_agent.service import AgentService, AppEvent, InvalidEvent, Page
from device_agent.settings import AgentSettings
from protos.actions import BY_NAME
from tandem_core.body_limit import BodyLimit

OPS_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "the ops token is missing or wrong"},
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body could not be decoded"},
    401: {"model": ErrorOut, "description": "no app token, or not the token of this device_id"},
    413: {"model": ErrorOut, "description": "body over DEVICE_MAX_BODY_BYTES"},
}


Route = TypeVar("Route", bound=Callable[..., Any])


def validated_as(model: type[BaseModel]) -> Callable[[Route], Route]:
    """FastAPI validates (and documents) `body` as `model`, a subclass the route's annotation
    names for the type checker: the bounded models are built per app, from its settings."""

    def mark(route: Route) -> Route:
        route.__annotations__["body"] = model
        return route

    return mark


def refused(field: str, value: object, exc: InvalidEvent) -> RequestValidationError:
    """The service's own refusal in the schema's 422 shape (the one the contract documents)."""
    error = {"type": "value_error", "loc": ("body", field), "msg": str(exc), "input": value}
    return RequestValidationError([error])


def page_to_body(page: Page) -> RecommendOut:
    d = page.decision
    pairs = zip(page.items.items.tolist(), page.items.categories.tolist(), strict=True)
    return RecommendOut(
        items=[ItemOut(item_id=i, category_id=c) for i, c in pairs],
        source=page.source,  # type: ignore[arg-type]
        decision=DecisionOut(
            value=d.value, threshold=d.threshold, shift=d.shift, asked_cloud=d.asked,
            outcome=d.outcome,
        ),
        model_version=page.model_version,
        fill=page.fill,
    )  # fmt: skip


def create_app(service: AgentService, a: AgentSettings) -> FastAPI:
    """The routes; app tokens under DEVICE_APP_SECRET, bodies over DEVICE_MAX_BODY_BYTES: 413."""
    app = FastAPI(title="Tandem device agent", version="1")
    app.add_middleware(BodyLimit, max_bytes=a.max_body_bytes)
    auth = AppAuth(a.app_secret.get_secret_value().encode(), a.app_kid, a.app_max_token_lifetime_s)
    ops = OpsAuth(a.ops_token.get_secret_value())
    # the schema says this agent's limits (DEVICE_MAX_K, DEVICE_MAX_EVENTS): a body it accepts
    # is served, one it refuses is a 422 naming the field
    Recommend, Events = bounded(service.max_k, a.max_events)

    @app.exception_handler(AppUnauthorized)
    def unauthorized(_: Request, exc: AppUnauthorized) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": SCHEME}
        )

    def credentials_refused(request: Request) -> JSONResponse | None:
        """The 401 a request without a well-formed app token gets, before any other answer."""
        try:
            auth.well_formed(request.headers.get("authorization"))
        except AppUnauthorized as refused:
            return unauthorized(request, refused)
        return None

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI validates the body before any dependency runs: credentials are checked here
        first (no token: 401, not the schema's details), and the answer never echoes the input
        (NaN or undecodable bytes in it would fail to encode: a 500)."""
        if (no_credentials := credentials_refused(request)) is not None:
            return no_credentials
        errors = [
            {"type": str(e.get("type", "")), "loc": list(e.get("loc", ())), "msg": str(e["msg"])}
            for e in exc.errors()[:20]
        ]  # at most twenty: a hostile body cannot make the answer large
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    def framework(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """The framework's own refusals (400: a body that cannot be decoded; 404; 405)."""
        if exc.status_code == 400 and (no_credentials := credentials_refused(request)):
            return no_credentials
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    def app_token(authorization: str | None = Header(None)) -> str:
        """The token's form; the routes check it opens the body's device (after parsing)."""
        return auth.well_formed(authorization)

    def ops_allowed(authorization: str | None = Header(None)) -> None:
        ops.check(authorization)

    @app.post("/v1/recommend", response_model=RecommendOut, responses=ERRORS)
    @validated_as(Recommend)
    def recommend(body: RecommendIn, token: str = Depends(app_token)) -> RecommendOut:
        auth.check(body.device_id, token)
        start = time.perf_counter()
        try:
            page = service.recommend(body.device_id, body.k)
        except InvalidEvent as exc:
            raise refused("k", body.k, exc) from None
        metrics.LATENCY.labels(page.source).observe(time.perf_counter() - start)
        return page_to_body(page)

    @app.post("/v1/events", response_model=EventsOut, responses=ERRORS)
    @validated_as(Events)
    def events(body: EventsIn, token: str = Depends(app_token)) -> EventsOut:
        auth.check(body.device_id, token)
        batch = [AppEvent(e.item_id, BY_NAME[e.action], e.timestamp_ms) for e in body.events]
        try:
            return EventsOut(accepted=service.record_events(body.device_id, batch))
        except InvalidEvent as exc:
            raise refused("events", len(batch), exc) from None

    @app.get("/v1/status", dependencies=[Depends(ops_allowed)], responses=OPS_ERRORS)
    def status() -> dict[str, Any]:
        return service.status()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        # ready as soon as it can answer: with no model or cloud it serves the cloud order / pool
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get(
        "/metrics", dependencies=[Depends(ops_allowed)], responses=OPS_ERRORS,
        response_class=PlainTextResponse,
    )  # fmt: skip
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
