"""`python -m cloud_service.main`: one cloud replica (gRPC + REST) set by CLOUD_* variables."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

from cloud_service.build import MissingAuthKey, build_services
from cloud_service.server import CloudServer
from cloud_service.settings import load_settings
from tandem_core.settings import EXIT_BAD_SETTINGS
from tandem_core.signing import ReleaseKeyError

log = logging.getLogger("cloud_service")


def announce(server: CloudServer, ports_file: Path | None) -> None:
    """Print (and optionally write) the bound ports: with port 0 only the process knows them."""
    ports = {"grpc": server.grpc_port, "http": server.http_port}
    line = json.dumps(ports)
    print(f"cloud_service ready {line}", flush=True)
    if ports_file is not None:
        tmp = ports_file.with_suffix(".tmp")
        tmp.write_text(line)
        tmp.replace(ports_file)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    try:
        services = build_services(settings)
    except (ReleaseKeyError, MissingAuthKey) as exc:  # no trusted key: refuse to serve anything
        print(f"invalid CLOUD_* settings:\n  {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    t = settings.transport
    server = CloudServer(services, t.host, t.grpc_port, t.http_port)
    # uvicorn re-raises the signal it caught after shutting down; this makes that a clean exit
    signal.signal(signal.SIGTERM, lambda *_: server.drain())
    server.serve_forever(on_ready=lambda: announce(server, t.ports_file))
    log.info("cloud_service stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
