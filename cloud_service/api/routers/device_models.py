"""GET /v1/device-model: the on-device model of a kind (default the re-ranker), unless current."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud_service.api.handling import Token, observed
from cloud_service.api.schemas import DeviceModelOut
from cloud_service.api.serde import device_model_to_body
from cloud_service.services.container import CloudServices


def router(services: CloudServices) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/device-model", response_model=DeviceModelOut)
    def device_model(
        device_id: Annotated[str, Query(max_length=64)],
        current_version: Annotated[str, Query(max_length=128)] = "",
        kind: Annotated[str, Query(max_length=32)] = "",
        x_device_token: Token = None,
    ) -> DeviceModelOut:
        with observed("GetDeviceModel"):
            reply = services.device_models.get(device_id, current_version, x_device_token, kind)
            return device_model_to_body(reply)

    return api
