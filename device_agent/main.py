"""`python -m device_agent.main`: one agent process serving many devices, set by DEVICE_*."""

from __future__ import annotations

import json
import logging
import signal
import sys

from device_agent.build import build_agent
from device_agent.server import AgentServer
from device_agent.settings import load_settings
from tandem_core.settings import EXIT_BAD_SETTINGS
from tandem_core.signing import ReleaseKeyError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    ports_file = settings.agent.ports_file
    try:
        agent = build_agent(settings)
    except ReleaseKeyError as exc:  # no trusted key: install nothing, serve nothing
        print(f"invalid DEVICE_* settings:\n  {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    server = AgentServer(agent, settings.agent.host, settings.agent.http_port)

    def announce() -> None:
        line = json.dumps({"http": server.port})
        if ports_file is not None:
            tmp = ports_file.with_suffix(".tmp")
            tmp.write_text(line)
            tmp.replace(ports_file)
        print(f"device_agent ready {line}", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises it after shutting down
    server.serve_forever(on_ready=announce)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
