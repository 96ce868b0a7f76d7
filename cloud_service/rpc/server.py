"""Builds the gRPC server: the Tandem servicer, grpc.health.v1, reflection, message size limits."""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cloud_service.rpc.malformed import add_tandem_servicer
from cloud_service.rpc.servicer import TandemServicer
from cloud_service.services.container import CloudServices
from cloud_service.settings import TransportSettings
from protos.tandem.v1 import tandem_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Tandem"].full_name
log = logging.getLogger(__name__)


@dataclass
class GrpcServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE):
            self.health.set(name, status)


def build_grpc_server(services: CloudServices, host: str, port: int) -> GrpcServer:
    """Bind to `port` (0 = any free port) and report the port actually bound; not yet started."""
    s = services.settings.transport
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=s.grpc_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", s.grpc_max_receive_bytes),
            ("grpc.max_send_message_length", s.grpc_max_send_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    add_tandem_servicer(TandemServicer(services), server)  # malformed bodies: INVALID_ARGUMENT
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    credentials = server_credentials(s)
    if credentials is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    mode = "plaintext" if credentials is None else "TLS"
    if s.grpc_tls_client_ca_file is not None:
        mode = "mutual TLS (client certificates required)"
    log.info("gRPC on %s:%d: %s", host, bound, mode)
    out = GrpcServer(server, bound, health_servicer)
    out.set_serving(True)
    return out


def server_credentials(s: TransportSettings) -> grpc.ServerCredentials | None:
    """TLS from CLOUD_GRPC_TLS_* PEM files, mutual when a client CA is set; None: plaintext."""
    if s.grpc_tls_cert_file is None or s.grpc_tls_key_file is None:
        return None
    ca = s.grpc_tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(s.grpc_tls_key_file.read_bytes(), s.grpc_tls_cert_file.read_bytes())],
        root_certificates=ca.read_bytes() if ca is not None else None,
        require_client_auth=ca is not None,
    )
