"""Runs both transports of one cloud replica, reports their bound ports, drains on shutdown."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from cloud_service.api.app import create_app
from cloud_service.rpc.server import GrpcServer, build_grpc_server
from cloud_service.services.container import CloudServices

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn, with a hook that runs before it stops accepting (health NOT_SERVING first)."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)


class CloudServer:
    """gRPC and HTTP on the same domain services; port 0 binds any free port."""

    def __init__(self, services: CloudServices, host: str, grpc_port: int, http_port: int) -> None:
        self.services = services
        self.grpc: GrpcServer = build_grpc_server(services, host, grpc_port)
        self.http_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.http_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.http_socket.bind((host, http_port))
        t = services.settings.transport
        config = uvicorn.Config(
            create_app(services), log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=max(1, int(t.shutdown_grace_s)),
            ssl_certfile=t.http_tls_cert_file, ssl_keyfile=t.http_tls_key_file,
        )  # fmt: skip
        mode = "plaintext" if t.http_tls_cert_file is None else "TLS"
        log.info("REST on %s:%d: %s", host, self.http_port, mode)
        self.http = DrainingServer(config, self.drain)
        self._thread: threading.Thread | None = None
        self._drained = False

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def http_port(self) -> int:
        return int(self.http_socket.getsockname()[1])

    def drain(self) -> None:
        """Say NOT_SERVING / not ready first, so balancers stop sending before we stop serving."""
        if self._drained:
            return
        self._drained = True
        self.services.readiness.shutting_down.set()
        self.grpc.set_serving(False)

    def serve_forever(self, on_ready: Callable[[], None] = lambda: None) -> None:
        """Main-thread mode: blocks until SIGTERM/SIGINT, then drains and stops both servers.

        `on_ready` runs once both ports accept connections (gRPC started, HTTP listening)."""
        self.grpc.server.start()
        self.http_socket.listen(2048)  # uvicorn listens again with its own backlog; harmless
        self._watch(start=True)
        on_ready()
        self.http.run(sockets=[self.http_socket])
        self._watch(start=False)
        self.grpc.server.stop(self.services.settings.transport.shutdown_grace_s).wait()

    def start(self) -> None:
        """Background mode (tests, benchmarks): returns once both servers accept."""
        self.grpc.server.start()
        self._thread = threading.Thread(
            target=self.http.run, kwargs={"sockets": [self.http_socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.http.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        self._watch(start=True)

    def _watch(self, start: bool) -> None:
        """The model watcher (hot swap of the ranker bundle) runs while the servers do."""
        watch = self.services.bundle_watch
        if watch is not None:
            watch.start() if start else watch.stop()

    def stop(self, grace_s: float = 1.0) -> None:
        self.drain()
        self._watch(start=False)
        self.http.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=grace_s + 5)
        self.grpc.server.stop(grace_s).wait()
        self.http_socket.close()
