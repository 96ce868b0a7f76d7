"""POST /v1/events: a device's batch of exposures, clicks and purchases."""

from __future__ import annotations

from fastapi import APIRouter

from cloud_service.api.handling import Token, observed
from cloud_service.api.schemas import EventsBody, EventsOut
from cloud_service.api.serde import events_from_body
from cloud_service.services.container import CloudServices


def router(services: CloudServices) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/events", response_model=EventsOut)
    def report_events(body: EventsBody, x_device_token: Token = None) -> EventsOut:
        with observed("ReportEvents"):
            receipt = services.events.report(
                body.device_id, events_from_body(body), x_device_token, batch_id=body.batch_id
            )
            return EventsOut(accepted=receipt.accepted, duplicate=receipt.duplicate)

    return api
