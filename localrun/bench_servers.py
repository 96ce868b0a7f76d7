"""The baselines of the serving benchmark: a hello-world FastAPI endpoint and a bare gRPC echo.

Configured like the cloud service (uvicorn, one process; gRPC thread pool of 8) so the ratio
between them and Recommend is the cost of our work, not of a different server setup.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
from concurrent import futures
from pathlib import Path

import grpc
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Hello(BaseModel):
    message: str


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello", response_model=Hello)
    def hello() -> Hello:
        return Hello(message="hello")

    return app


def echo_server(workers: int = 8) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, _: request)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ports-file", type=Path, required=True)
    args = parser.parse_args()
    grpc_server, grpc_port = echo_server()
    grpc_server.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(hello_app(), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises it after shutting down
    args.ports_file.write_text(json.dumps({"http": sock.getsockname()[1], "grpc": grpc_port}))
    server.run(sockets=[sock])
    grpc_server.stop(1).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
