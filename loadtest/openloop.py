"""Open-loop driver: feed steps at fixed arrival times, latency measured from the intended send.

A closed loop (locust's users) waits for each answer before the next request, so a stall slows
the load down and hides itself ("coordinated omission"). Here step i is due at t0 + i / rate
whatever happened before; its latency runs from that due time to the recommend answer, so time
spent queued behind a stall (in the agent, or waiting for the device's previous step) counts.

    python -m loadtest.openloop --agents http://127.0.0.1:8100 --rate 50 --seconds 60 --out o.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from loadtest.feed import Event, Feed, feed_for
from localrun.app_tokens import AppTokens

try:  # uvicorn[standard] brings uvloop; the plain asyncio loop works too, slower
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

PAGE_SIZE = int(os.environ.get("TANDEM_PAGE_SIZE", "4"))


def app_authorization(tokens: AppTokens, device_id: str) -> str:
    """The app's Authorization header for this device (its token under the agents' app key)."""
    return tokens.header(device_id)["Authorization"]


class Connection:
    """One keep-alive HTTP/1.1 connection to an agent on asyncio streams.

    Measured on this 2-core machine: with httpx's AsyncClient the driver used ~80 % of a core at
    150 steps/s (300 requests/s) and fell seconds behind its own schedule, which then counted
    as latency. Enough HTTP for the agent (uvicorn answers with a Content-Length)."""

    def __init__(self, base_url: str, authorization: str) -> None:
        url = urlsplit(base_url)
        self.authorization = authorization
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, object]) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: {self.authorization}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        try:
            return await self._response(self.reader)
        except BaseException:  # also a timeout's cancellation: the reply may still come
            self.writer.close()  # so the next exchange starts on a new connection
            raise

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Device:
    device_id: str
    conn: Connection
    feed: Feed
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[Event] = field(default_factory=list)


@dataclass
class Tally:
    latency_ms: list[float] = field(default_factory=list)  # due time → recommend answered
    service_ms: list[float] = field(default_factory=list)  # recommend sent → answered
    driver_lag_ms: list[float] = field(default_factory=list)  # due → the step's task runs
    device_wait_ms: list[float] = field(default_factory=list)  # behind the device's last step
    failures: int = 0
    event_failures: int = 0


async def feed_step(dev: Device, due: float, tally: Tally) -> None:
    started = time.perf_counter()  # later than due only when this driver itself falls behind
    tally.driver_lag_ms.append((started - due) * 1000)
    async with dev.lock:  # a device's steps are sequential, as on a phone
        tally.device_wait_ms.append((time.perf_counter() - started) * 1000)
        dev.feed.begin_step()
        if dev.pending:
            events: dict[str, object] = {"device_id": dev.device_id, "events": dev.pending}
            dev.pending = []
            status, _ = await dev.conn.post("/v1/events", events)
            tally.event_failures += int(status != 200)
        sent = time.perf_counter()
        status, body = await dev.conn.post(
            "/v1/recommend", {"device_id": dev.device_id, "k": PAGE_SIZE}
        )
        done = time.perf_counter()
        items = json.loads(body)["items"] if status == 200 else []
        if not items:
            tally.failures += 1
            return
        tally.latency_ms.append((done - due) * 1000)
        tally.service_ms.append((done - sent) * 1000)
        dev.pending = dev.feed.react(items)


async def guarded_step(dev: Device, due: float, tally: Tally, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(feed_step(dev, due, tally), timeout_s)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
            ValueError, KeyError):  # fmt: skip
        tally.failures += 1


async def drive(
    agents: list[str], rate: float, seconds: float, devices: int, prefix: str
) -> tuple[Tally, int]:
    """Issue round(rate × seconds) steps over `devices` devices at fixed due times."""
    tokens = AppTokens(os.environ["TANDEM_APP_SECRET"])  # the agents' app key; no default
    fleet = [
        Device(
            name,
            Connection(agents[i % len(agents)], app_authorization(tokens, name)),
            feed_for(name),
        )
        for i, name in enumerate(f"{prefix}-{i}" for i in range(devices))
    ]
    tally, tasks, n = Tally(), [], round(rate * seconds)
    t0 = time.perf_counter() + 0.2
    for i in range(n):
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(guarded_step(fleet[i % devices], due, tally, 30.0)))
    await asyncio.gather(*tasks)
    for dev in fleet:
        dev.conn.close()
    return tally, n


def summary(tally: Tally, rate: float, seconds: float, sent: int) -> dict[str, float]:
    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q)) if xs else float("nan")

    return {
        "rate": rate, "seconds": seconds, "sent": sent, "answered": len(tally.latency_ms),
        "failures": tally.failures, "event_failures": tally.event_failures,
        "p50_ms": pct(tally.latency_ms, 50), "p95_ms": pct(tally.latency_ms, 95),
        "p99_ms": pct(tally.latency_ms, 99), "max_ms": max(tally.latency_ms, default=float("nan")),
        "service_p50_ms": pct(tally.service_ms, 50), "service_p99_ms": pct(tally.service_ms, 99),
        "driver_lag_p99_ms": pct(tally.driver_lag_ms, 99),
        "device_wait_p99_ms": pct(tally.device_wait_ms, 99),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", nargs="+", required=True, help="agent base URLs")
    p.add_argument("--rate", type=float, required=True, help="feed steps per second")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--prefix", default="openloop")
    p.add_argument("--out", type=Path, required=True, help="JSON summary")
    args = p.parse_args(argv)
    tally, sent = asyncio.run(
        drive(args.agents, args.rate, args.seconds, args.devices, args.prefix)
    )
    result = summary(tally, args.rate, args.seconds, sent)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
