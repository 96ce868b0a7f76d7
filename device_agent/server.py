"""Serves the agent's REST app on a bound socket (port 0 = any), in the foreground or a thread."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import uvicorn

from device_agent.api.app import create_app
from device_agent.build import Agent

log = logging.getLogger(__name__)


class AgentServer:
    def __init__(self, agent: Agent, host: str, port: int) -> None:
        self.agent = agent
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        a = agent.settings.agent
        config = uvicorn.Config(
            create_app(agent.service, a), log_level="warning", access_log=False,
            lifespan="off", ssl_certfile=a.http_tls_cert_file, ssl_keyfile=a.http_tls_key_file,
        )  # fmt: skip
        mode = "plaintext" if a.http_tls_cert_file is None else "TLS"
        log.info("REST on %s:%d: %s", host, self.port, mode)
        self.http = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def serve_forever(self, on_ready: Callable[[], None] = lambda: None) -> None:
        self.agent.poller.start()
        if self.agent.forwarder is not None:
            self.agent.forwarder.start()
        if self.agent.trainer is not None:
            self.agent.trainer.start()
        self.socket.listen(2048)
        on_ready()
        try:
            self.http.run(sockets=[self.socket])
        finally:
            self.agent.poller.stop()
            if self.agent.trainer is not None:
                self.agent.trainer.stop()
            if self.agent.forwarder is not None:  # after the app stopped: nothing more arrives
                self.agent.forwarder.stop()
            self.agent.cloud.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.http.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the agent's HTTP server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.http.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.socket.close()
