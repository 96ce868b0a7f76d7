"""GetDeviceModel: the current on-device ONNX model, or not_modified when the device has it."""

from __future__ import annotations

from dataclasses import dataclass

from cloud_service.auth import DeviceAuth
from cloud_service.errors import NotFound
from cloud_service.registry.device_models import DeviceModel, DeviceModelRegistry


@dataclass(frozen=True)
class DeviceModelReply:
    model: DeviceModel
    not_modified: bool


class DeviceModelService:
    def __init__(self, auth: DeviceAuth, registry: DeviceModelRegistry) -> None:
        self.auth, self.registry = auth, registry

    def get(self, device_id: str, current_version: str, token: str | None) -> DeviceModelReply:
        self.auth.verify(device_id, token)
        model = self.registry.current()
        if model is None:
            raise NotFound("no device model has been published yet")
        return DeviceModelReply(model, not_modified=current_version == model.version)
