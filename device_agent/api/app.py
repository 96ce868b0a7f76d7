"""The agent's REST app: thin routes over AgentService."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from device_agent import metrics
from device_agent.api.schemas import (
    DecisionOut,
    EventsIn,
    EventsOut,
    ItemOut,
    RecommendIn,
    RecommendOut,
)
from device_agent.service import AgentService, AppEvent, InvalidEvent, Page
from protos.actions import BY_NAME


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
    )  # fmt: skip


def create_app(service: AgentService, max_events: int) -> FastAPI:
    app = FastAPI(title="Tandem device agent", version="1")

    @app.post("/v1/recommend", response_model=RecommendOut)
    def recommend(body: RecommendIn) -> RecommendOut:
        start = time.perf_counter()
        try:
            page = service.recommend(body.device_id, body.k)
        except InvalidEvent as exc:
            raise HTTPException(422, str(exc)) from None
        metrics.LATENCY.labels(page.source).observe(time.perf_counter() - start)
        return page_to_body(page)

    @app.post("/v1/events", response_model=EventsOut)
    def events(body: EventsIn) -> EventsOut:
        if len(body.events) > max_events:
            raise HTTPException(422, f"more than {max_events} events in one batch")
        batch = [AppEvent(e.item_id, BY_NAME[e.action], e.timestamp_ms) for e in body.events]
        try:
            return EventsOut(accepted=service.record_events(body.device_id, batch))
        except InvalidEvent as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        return service.status()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        # ready as soon as it can answer: with no model or cloud it serves the cloud order / pool
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
