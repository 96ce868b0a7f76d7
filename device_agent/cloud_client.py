"""gRPC client of the cloud (the agent's `CloudPort`) and the device's only proto conversions.

Every call has a deadline; UNAVAILABLE is retried by service config within it.
"""

from __future__ import annotations

import json

import grpc
import numpy as np

from device_agent.ports import (
    CloudError,
    CloudList,
    DeviceModelBytes,
    ReportedEvent,
    Submodel,
)
from protos.actions import to_wire
from protos.auth import TOKEN_HEADER
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from protos.vectors import matrix_from_proto, tensor_from_proto, vector_from_proto
from tandem_core.federated import update as update_codec
from tandem_core.federated.update import ModelUpdate

# gRPC retries transparently within the caller's deadline (never past it).
SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "tandem.v1.Tandem"}],
        "retryPolicy": {
            "maxAttempts": 2, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
})  # fmt: skip


def _error(exc: grpc.RpcError) -> CloudError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CloudError("timeout", exc.details() or "")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        trailers = dict(exc.trailing_metadata() or ())
        retry_ms = float(trailers.get("retry-after-ms", 0) or 0)
        return CloudError("throttled", exc.details() or "", retry_ms / 1000)
    if code == grpc.StatusCode.UNAVAILABLE:
        return CloudError("unavailable", exc.details() or "")
    return CloudError("error", f"{code.name}: {exc.details()}")


class CloudClient:
    def __init__(self, target: str, deadline_s: float, tokens: object) -> None:
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.service_config", SERVICE_CONFIG),
                ("grpc.enable_retries", 1),
                ("grpc.max_receive_message_length", 32 << 20),
                # reconnect quickly after the cloud restarts
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self.stub = pb_grpc.TandemStub(self.channel)
        self.deadline_s = deadline_s
        self.tokens = tokens  # callable device_id -> token

    def _meta(self, device_id: str) -> list[tuple[str, str]]:
        return [(TOKEN_HEADER, self.tokens(device_id))]  # type: ignore[operator]

    def recommend(
        self, device_id: str, k: int, recent: list[tuple[int, int, int]], exclude: list[int]
    ) -> CloudList:
        """recent: (item, action code 0 exposure / 1 click / 2 purchase, ts ms), latest last."""
        request = pb.RecommendRequest(
            device_id=device_id, k=k, exclude_item_ids=exclude,
            recent=[
                pb.Behavior(item_id=i, action=to_wire(a), timestamp_ms=t) for i, a, t in recent
            ],
        )  # fmt: skip
        try:
            reply = self.stub.Recommend(
                request, metadata=self._meta(device_id), timeout=self.deadline_s
            )
        except grpc.RpcError as exc:
            raise _error(exc) from None
        items = reply.items
        rows = (
            np.stack([vector_from_proto(i.embedding) for i in items])
            if items
            else np.empty((0, 0), dtype=np.float32)
        )
        return CloudList(
            item_ids=np.array([i.item_id for i in items], dtype=np.int64),
            category_ids=np.array([i.category_id for i in items], dtype=np.int64),
            ctr=np.array([i.ctr for i in items], dtype=np.float32),
            rows=rows, model_version=reply.model_version,
            embedding_version=reply.embedding_version, request_id=reply.request_id,
        )  # fmt: skip

    def device_model(
        self, device_id: str, current_version: str, timeout_s: float, kind: str = "reranker"
    ) -> DeviceModelBytes:
        request = pb.DeviceModelRequest(
            device_id=device_id, current_version=current_version, kind=kind
        )
        try:
            reply = self.stub.GetDeviceModel(
                request, metadata=self._meta(device_id), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return DeviceModelBytes(
            reply.version, reply.sha256, reply.onnx_model, reply.not_modified,
            embedding_version=reply.embedding_version, kind=reply.kind or kind,
            manifest=reply.manifest,
        )  # fmt: skip

    def pull_submodel(
        self, device_id: str, round_id: str, item_ids: list[int], timeout_s: float
    ) -> Submodel:
        """The rows of `item_ids` (padded with decoys by the caller) and the dense layers."""
        req = pb.PullRequest(device_id=device_id, round_id=round_id, item_ids=item_ids)
        try:
            r = self.stub.PullSubmodel(req, metadata=self._meta(device_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return Submodel(
            np.array(r.item_ids, dtype=np.int64), matrix_from_proto(r.rows),
            dict(tensor_from_proto(t) for t in r.dense), int(r.base_version), r.round_id,
            r.selected,
        )  # fmt: skip

    def push_update(self, update: ModelUpdate, timeout_s: float) -> tuple[bool, str]:
        """(accepted, reason); accepted means durably stored by the cloud."""
        msg = update_codec.to_proto(update)
        try:
            r = self.stub.PushUpdate(msg, metadata=self._meta(update.device_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return r.accepted, r.reason

    def report_events(
        self, device_id: str, batch_id: str, events: list[ReportedEvent], timeout_s: float
    ) -> tuple[int, bool]:
        request = pb.ReportEventsRequest(
            device_id=device_id, batch_id=batch_id,
            events=[
                pb.Event(
                    item_id=e.item_id, action=to_wire(e.action), timestamp_ms=e.timestamp_ms,
                    position=e.position, request_id=e.request_id, source=e.source,
                    asked_cloud=e.asked_cloud, value=e.value, threshold=e.threshold,
                    propensity=e.propensity, features=e.features, step=e.step,
                )
                for e in events
            ],
        )  # fmt: skip
        try:
            r = self.stub.ReportEvents(request, metadata=self._meta(device_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return r.accepted, r.duplicate

    def close(self) -> None:
        self.channel.close()
