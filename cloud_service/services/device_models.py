"""GetDeviceModel: the current on-device model of a kind, or not_modified when the device has it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cloud_service.auth import DeviceAuth
from cloud_service.errors import InvalidArgument, NotFound
from cloud_service.registry.device_models import DeviceModel, DeviceModelRegistry
from tandem_core.release import DEVICE_KINDS, RERANKER


@dataclass(frozen=True)
class DeviceModelReply:
    model: DeviceModel
    not_modified: bool


class DeviceModelService:
    def __init__(self, auth: DeviceAuth, registries: Mapping[str, DeviceModelRegistry]) -> None:
        self.auth, self.registries = auth, dict(registries)

    def get(
        self, device_id: str, current_version: str, token: str | None, kind: str = ""
    ) -> DeviceModelReply:
        self.auth.verify(device_id, token)
        kind = kind or RERANKER  # devices that name no kind ask for the re-ranker
        if kind not in DEVICE_KINDS:
            raise InvalidArgument(f"unknown device model kind {kind!r} (one of {DEVICE_KINDS})")
        registry = self.registries.get(kind)
        model = registry.current() if registry is not None else None
        if model is None:
            raise NotFound(f"no {kind} has been published yet")
        return DeviceModelReply(model, not_modified=current_version == model.version)
