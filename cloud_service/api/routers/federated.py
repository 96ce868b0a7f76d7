"""POST /v1/submodel/pull and /push (a device's side of a round); GET /v1/federated/contributions.

The bodies are the protobuf messages in their proto3 JSON form (bytes as base64), so REST and
gRPC share one schema for these binary-heavy bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format

from cloud_service.api.handling import Token, observed, proto_from_json
from cloud_service.api.proto_schema import ref
from cloud_service.api.schemas import ContributionsOut, PushOut
from cloud_service.api.serde import contributions_to_body
from cloud_service.errors import InvalidArgument
from cloud_service.services.container import CloudServices
from cloud_service.store.federated_state import CONTRIBUTIONS_KEPT
from cloud_service.wire import submodel_to_proto, update_from_proto
from protos.tandem.v1 import tandem_pb2 as pb

MESSAGES = (pb.PullRequest.DESCRIPTOR, pb.PullResponse.DESCRIPTOR, pb.PushRequest.DESCRIPTOR)


def message_body(message: Any) -> dict[str, Any]:
    """The OpenAPI request body of a route whose body is `message` as proto3 JSON."""
    content = {"application/json": {"schema": ref(message.DESCRIPTOR)}}
    return {"requestBody": {"required": True, "content": content}}


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (json_format then parses it into the message)."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidArgument("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the body must be a JSON object (the message in proto3 JSON)")
    return body


JsonObject = Annotated[dict[str, Any], Depends(json_object)]


def router(services: CloudServices) -> APIRouter:
    api = APIRouter()
    pulled = {"content": {"application/json": {"schema": ref(pb.PullResponse.DESCRIPTOR)}}}

    @api.post(
        "/v1/submodel/pull", response_model=None, response_class=JSONResponse,
        openapi_extra=message_body(pb.PullRequest), responses={200: pulled},
    )  # fmt: skip
    def pull_submodel(body: JsonObject, x_device_token: Token = None) -> dict[str, Any]:
        with observed("PullSubmodel"):
            req = proto_from_json(body, pb.PullRequest())
            sub = services.require_federated().pull(
                req.device_id, req.round_id, list(req.item_ids), x_device_token
            )
            return json_format.MessageToDict(submodel_to_proto(sub))

    @api.post(
        "/v1/submodel/push", response_model=PushOut, openapi_extra=message_body(pb.PushRequest)
    )
    def push_update(body: JsonObject, x_device_token: Token = None) -> PushOut:
        with observed("PushUpdate"):
            push = update_from_proto(proto_from_json(body, pb.PushRequest()))
            receipt = services.require_federated().push(push, x_device_token)
            return PushOut(
                accepted=receipt.accepted, reason=receipt.reason, stream_entry_id=receipt.entry_id
            )

    @api.get("/v1/federated/contributions", response_model=ContributionsOut)
    def contributions(
        rounds: Annotated[int, Query(ge=1, le=CONTRIBUTIONS_KEPT)] = 1,
        k: Annotated[int, Query(ge=1, le=100)] = 5,
    ) -> ContributionsOut:
        """The latest rounds' contribution scores (the dashboard's card): per round the `k`
        highest and lowest, the devices left out, the mode and the signal's version."""
        return contributions_to_body(services.require_federated().contributions(rounds), k)

    return api
