"""Devices calling the cloud directly over gRPC (Recommend, ReportEvents, GetDeviceModel).

    locust -f loadtest/grpc_locustfile.py --host grpc://127.0.0.1:50051

TANDEM_TOKEN_SECRET must be the cloud's CLOUD_AUTH_SECRET (v2 tokens, kid k0, a 12 h lifetime:
protos/auth.py); TANDEM_WORLD_SCALE / TANDEM_WORLD_SEED as in loadtest/locustfile.py.
Timings are reported through locust's `events.request`, the usual pattern for non-HTTP users.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, task

from loadtest import locust_final  # noqa: F401  (final stats CSV at exit)
from loadtest.feed import Event, Feed, feed_for
from protos.actions import BY_NAME, to_wire
from protos.auth import TOKEN_HEADER, device_token
from protos.tandem.v1 import tandem_pb2 as pb
from protos.tandem.v1 import tandem_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()  # grpc's own threads would block locust's gevent loop

PAGE_SIZE = int(os.environ.get("TANDEM_PAGE_SIZE", "4"))
POOL_SIZE = int(os.environ.get("TANDEM_POOL_SIZE", "48"))
DEADLINE_S = float(os.environ.get("TANDEM_GRPC_DEADLINE_S", "2.0"))
SECRET = os.environ["TANDEM_TOKEN_SECRET"].encode()  # no default: the run passes the cloud's
PREFIX = os.environ.get("TANDEM_DEVICE_PREFIX", "grpc")
_USER_NUMBERS = itertools.count()


def grpc_target(host: str | None) -> str:
    target = os.environ.get("TANDEM_CLOUD_GRPC") or host or "127.0.0.1:50051"
    return target.removeprefix("grpc://")


def wire(event: dict) -> pb.Action.ValueType:
    """The protobuf action number of a feed event's action name."""
    return to_wire(BY_NAME[event["action"]])


class CloudGrpcUser(User):
    """A device without an agent in front: asks the cloud for a list at every step."""

    wait_time = between(0.05, 0.15)
    channel: grpc.Channel
    stub: pb_grpc.TandemStub
    device_id: str
    meta: list[tuple[str, str]]
    feed: Feed
    recent: deque[Event]
    pending: list[Event]
    model_version: str

    def on_start(self) -> None:
        self.channel = grpc.insecure_channel(grpc_target(self.host))
        self.stub = pb_grpc.TandemStub(self.channel)
        self.device_id = f"{PREFIX}-{next(_USER_NUMBERS)}-{uuid.uuid4().hex[:8]}"
        self.meta = [(TOKEN_HEADER, device_token(SECRET, self.device_id))]
        self.feed = feed_for(self.device_id)
        self.recent, self.pending, self.model_version = deque(maxlen=30), [], ""

    def on_stop(self) -> None:
        self.channel.close()

    def _call(self, name: str, method: Callable[..., Any], request: Any) -> Any:
        """One timed RPC, fired as a locust request event; None when it failed."""
        start = time.perf_counter()
        reply, error = None, None
        try:
            reply = method(request, metadata=self.meta, timeout=DEADLINE_S)
        except grpc.RpcError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=(time.perf_counter() - start) * 1000,
            response_length=reply.ByteSize() if reply is not None else 0, exception=error,
            context={"device_id": self.device_id},
        )  # fmt: skip
        return reply

    @task(10)
    def recommend(self) -> None:
        self.feed.begin_step()
        recent = [
            pb.Behavior(item_id=e["item_id"], action=wire(e), timestamp_ms=e["timestamp_ms"])
            for e in self.recent
        ]
        request = pb.RecommendRequest(device_id=self.device_id, k=POOL_SIZE, recent=recent)
        reply = self._call("Recommend", self.stub.Recommend, request)
        if reply is None or not reply.items:
            return
        page = [
            {"item_id": i.item_id, "category_id": i.category_id} for i in reply.items[:PAGE_SIZE]
        ]
        events = self.feed.react(page)
        self.recent.extend(events)
        self.pending.extend(events)

    @task(3)
    def report_events(self) -> None:
        if not self.pending:
            return
        events = [
            pb.Event(item_id=e["item_id"], action=wire(e), timestamp_ms=e["timestamp_ms"])
            for e in self.pending
        ]  # fmt: skip
        self.pending = []
        request = pb.ReportEventsRequest(device_id=self.device_id, events=events)
        self._call("ReportEvents", self.stub.ReportEvents, request)

    @task(1)
    def device_model(self) -> None:
        request = pb.DeviceModelRequest(
            device_id=self.device_id, current_version=self.model_version
        )
        reply = self._call("GetDeviceModel", self.stub.GetDeviceModel, request)
        if reply is not None and not reply.not_modified:
            self.model_version = reply.version
