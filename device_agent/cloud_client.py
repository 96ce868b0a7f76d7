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
    PrivateInterest,
    ReportedEvent,
    SecAggReply,
    SecAggStage,
    Submodel,
)
from device_agent.secagg_wire import secagg_reply, secagg_request
from protos.actions import to_wire
from protos.auth import TOKEN_HEADER
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc
from protos.vectors import (
    matrix_from_proto,
    matrix_to_proto,
    tensor_from_proto,
    vector_from_proto,
)
from tandem_core.federated import update as update_codec
from tandem_core.federated.secure_update import SecureParams
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


def private_request(
    device_id: str, k: int, exclude: list[int], p: PrivateInterest
) -> pb.RecommendRequest:
    """Everything a private Recommend sends: the device, k, the ids to exclude, the embedding
    version and the pseudo-history with its weights; no behaviour."""
    request = pb.RecommendRequest(
        device_id=device_id, k=k, exclude_item_ids=exclude, private=True,
        model_version=p.embedding_version,
    )  # fmt: skip
    if len(p.interest_set):
        request.interest_set.CopyFrom(matrix_to_proto(p.interest_set))
        request.interest_weights.extend(p.weights.tolist())
    return request


class CloudClient:
    def __init__(
        self,
        target: str,
        deadline_s: float,
        tokens: object,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
    ) -> None:
        """`credentials`: TLS (plaintext without); `server_name`: the name the cloud's
        certificate must carry when it is not the target's host."""
        options: list[tuple[str, object]] = [
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", 32 << 20),
            # reconnect quickly after the cloud restarts
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = pb_grpc.TandemStub(self.channel)
        self.deadline_s = deadline_s
        self.tokens = tokens  # callable device_id -> token

    def _meta(self, device_id: str) -> list[tuple[str, str]]:
        return [(TOKEN_HEADER, self.tokens(device_id))]  # type: ignore[operator]

    def recommend(
        self,
        device_id: str,
        k: int,
        recent: list[tuple[int, int, int]],
        exclude: list[int],
        private: PrivateInterest | None = None,
    ) -> CloudList:
        """recent: (item, action code 0 exposure / 1 click / 2 purchase, ts ms), latest last.
        `private`: a private request, which carries no `recent` (see private_request)."""
        if private is not None:
            request = private_request(device_id, k, exclude, private)
        else:
            request = pb.RecommendRequest(
                device_id=device_id, k=k, exclude_item_ids=exclude,
                recent=[
                    pb.Behavior(item_id=i, action=to_wire(a), timestamp_ms=t)
                    for i, a, t in recent
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
            r.selected, SecureParams.from_proto(r.secure) if r.HasField("secure") else None,
        )  # fmt: skip

    def push_update(self, update: ModelUpdate, timeout_s: float) -> tuple[bool, str]:
        """(accepted, reason); accepted means durably stored by the cloud."""
        msg = update_codec.to_proto(update)
        try:
            r = self.stub.PushUpdate(msg, metadata=self._meta(update.device_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return r.accepted, r.reason

    def secure_aggregate(
        self, device_id: str, round_id: str, stage: SecAggStage, timeout_s: float,
        base_version: int = 0,
    ) -> SecAggReply:  # fmt: skip
        req = secagg_request(device_id, round_id, stage, base_version)
        try:
            r = self.stub.SecureAggregate(req, metadata=self._meta(device_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return secagg_reply(device_id, r)

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
