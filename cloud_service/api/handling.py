"""What every REST route shares: the device-token header, per-call metrics, the error response."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import Message

from cloud_service import metrics
from cloud_service.errors import BudgetExhausted, InvalidArgument, TandemError, status_of

Token = Annotated[str | None, Header(alias="x-device-token")]

M = TypeVar("M", bound=Message)


@contextmanager
def observed(method: str) -> Iterator[None]:
    """Count the call and its latency under its gRPC method name: both transports share labels."""
    start = time.perf_counter()
    code = "OK"
    try:
        yield
    except TandemError as exc:
        code = status_of(exc)[0]
        raise
    finally:
        metrics.REQUESTS.labels(method, "rest", code).inc()
        metrics.LATENCY.labels(method, "rest").observe(time.perf_counter() - start)


def proto_from_json(body: dict[str, Any], message: M) -> M:
    try:
        return json_format.ParseDict(body, message)
    except json_format.ParseError as exc:
        raise InvalidArgument(f"malformed body: {exc}") from None


def error_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TandemError)
    status_name, http_status = status_of(exc)
    headers = {}
    body = {"error": status_name, "detail": str(exc)}
    if isinstance(exc, BudgetExhausted):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        body["retry_after_ms"] = str(int(exc.retry_after_s * 1000) + 1)
    return JSONResponse(body, status_code=http_status, headers=headers)
