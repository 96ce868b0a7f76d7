"""POST /v1/submodel/pull and /push (a device's side of a round); GET /v1/federated/contributions.

The bodies are the protobuf messages in their proto3 JSON form (bytes as base64), so REST and
gRPC share one schema for these binary-heavy bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from google.protobuf import json_format

from cloud_service.api.handling import Token, observed, proto_from_json
from cloud_service.api.schemas import ContributionsOut
from cloud_service.api.serde import contributions_to_body
from cloud_service.services.container import CloudServices
from cloud_service.store.federated_state import CONTRIBUTIONS_KEPT
from cloud_service.wire import submodel_to_proto, update_from_proto
from protos.tandem.v1 import tandem_pb2 as pb


def router(services: CloudServices) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/submodel/pull")
    def pull_submodel(body: dict[str, Any], x_device_token: Token = None) -> dict[str, Any]:
        with observed("PullSubmodel"):
            req = proto_from_json(body, pb.PullRequest())
            sub = services.require_federated().pull(
                req.device_id, req.round_id, list(req.item_ids), x_device_token
            )
            return json_format.MessageToDict(submodel_to_proto(sub))

    @api.post("/v1/submodel/push")
    def push_update(body: dict[str, Any], x_device_token: Token = None) -> dict[str, Any]:
        with observed("PushUpdate"):
            push = update_from_proto(proto_from_json(body, pb.PushRequest()))
            receipt = services.require_federated().push(push, x_device_token)
            return {"accepted": receipt.accepted, "reason": receipt.reason,
                    "stream_entry_id": receipt.entry_id}  # fmt: skip

    @api.get("/v1/federated/contributions", response_model=ContributionsOut)
    def contributions(
        rounds: Annotated[int, Query(ge=1, le=CONTRIBUTIONS_KEPT)] = 1,
        k: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> ContributionsOut:
        """The latest rounds' contribution scores (the dashboard's card): per round the `k`
        highest and lowest, the devices left out, the mode and the signal's version."""
        return contributions_to_body(services.require_federated().contributions(rounds), k)

    return api
