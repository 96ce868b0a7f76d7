"""Headless Chromium driven over the DevTools protocol (a websocket), to test pages as a person sees
them: no driver package, only the browser binary and the websockets client uvicorn already needs.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

CHROMIUM = Path("/usr/bin/chromium")
# Loopback only: no sync, updates, reporting or lookups (the machine has no internet anyway).
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-domain-reliability", "--disable-breakpad", "--no-pings", "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--window-size=1280,900",
]  # fmt: skip


class HeadlessChromium:
    """One browser with one tab; `evaluate` runs JavaScript in the page and returns its value."""

    def __init__(self, profile: Path, binary: Path = CHROMIUM, timeout_s: float = 30) -> None:
        self.proc = subprocess.Popen(
            [str(binary), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port = self._devtools_port(profile / "DevToolsActivePort", timeout_s)
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            tab = next(t for t in targets if t["type"] == "page")
            self.ws: ClientConnection = connect(tab["webSocketDebuggerUrl"], max_size=None)
        except Exception:
            self.close()
            raise
        self._next_id = 0

    def _devtools_port(self, path: Path, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while not (path.exists() and path.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port ({self.proc.poll()})")
            time.sleep(0.05)
        return int(path.read_text().split()[0])

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            message = json.loads(self.ws.recv(timeout=15))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message["result"])

    def goto(self, url: str, timeout_s: float = 15) -> None:
        """Navigate and wait until the new document has loaded."""
        self.call("Page.navigate", url=url)
        loaded = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.evaluate(loaded):
                    return
            except RuntimeError:  # the old document's context went away mid-call
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not load in {timeout_s} s")
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 15) -> Any:
        """Evaluate until the value is truthy; returns it."""
        deadline = time.monotonic() + timeout_s
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout_s} s: {expression}")
            time.sleep(0.1)
        return value

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the browser and its helper processes
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
