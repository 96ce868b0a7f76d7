"""Tandem's gRPC method handlers, built from its descriptor, answering undecodable bodies with
INVALID_ARGUMENT instead of grpcio's INTERNAL "Exception deserializing request!"."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from cloud_service.errors import InvalidArgument
from cloud_service.rpc.servicer import handle
from protos.tandem.v1 import tandem_pb2 as pb

TANDEM = pb.DESCRIPTOR.services_by_name["Tandem"]
Behaviour = Callable[[Any, grpc.ServicerContext], Any]


@dataclass(frozen=True)
class Malformed:
    """Handed to the behaviour in place of a request that did not decode.

    A deserializer that raises cannot choose the status (grpcio aborts with INTERNAL), and one
    that returns None leaves grpcio waiting for a request, so the failure travels as a value."""

    message: str  # the request type's name, e.g. RecommendRequest
    reason: str


def reason_of(exc: DecodeError, request: Descriptor, size: int) -> str:
    """protobuf's reason without its "Error parsing message with type '…': " preamble."""
    text = str(exc).removeprefix(f"Error parsing message with type '{request.full_name}': ")
    return f"{text or 'not a valid protobuf message'} ({size} bytes)"


def tolerant_deserializer(request: Descriptor) -> Callable[[bytes], Message | Malformed]:
    parse = message_factory.GetMessageClass(request).FromString

    def deserialize(body: bytes) -> Message | Malformed:
        try:
            return parse(body)
        except DecodeError as exc:
            return Malformed(request.name, reason_of(exc, request, len(body)))

    return deserialize


def refusing_malformed(method: str, behaviour: Behaviour) -> Behaviour:
    """`behaviour`, except that a Malformed request is refused through the servicer's `handle`
    (INVALID_ARGUMENT via errors.STATUS, counted in the request metrics) and changes nothing."""

    def behave(request: Any, context: grpc.ServicerContext) -> Any:
        if not isinstance(request, Malformed):
            return behaviour(request, context)

        def refuse() -> None:
            raise InvalidArgument(f"malformed {request.message}: {request.reason}")

        return handle(method, context, refuse)

    return behave


def unary_handler(servicer: object, method: MethodDescriptor) -> grpc.RpcMethodHandler:
    if method.client_streaming or method.server_streaming:
        # a streamed request's messages are decoded one by one inside the behaviour's iterator;
        # refusing a Malformed there needs its own wrapper, so fail at start-up, not in traffic
        raise TypeError(f"{method.full_name} streams: only unary methods have a malformed guard")
    return grpc.unary_unary_rpc_method_handler(
        refusing_malformed(method.name, getattr(servicer, method.name)),
        request_deserializer=tolerant_deserializer(method.input_type),
        response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString,
    )


def method_handlers(
    servicer: object, service: ServiceDescriptor
) -> dict[str, grpc.RpcMethodHandler]:
    """One guarded handler per method of `service`, each calling the servicer's method."""
    return {method.name: unary_handler(servicer, method) for method in service.methods}


def add_tandem_servicer(servicer: object, server: grpc.Server) -> None:
    """What pb_grpc.add_TandemServicer_to_server does, with every deserializer guarded."""
    handlers = method_handlers(servicer, TANDEM)
    generic = grpc.method_handlers_generic_handler(TANDEM.full_name, handlers)
    server.add_generic_rpc_handlers((generic,))
    server.add_registered_method_handlers(TANDEM.full_name, handlers)
