"""What every REST route shares: the device-token header, per-call metrics, the error response."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def validation_response(_: Request, exc: Exception) -> JSONResponse:
    """A body or parameter the schema refuses: the same error body as every other refusal
    (ErrorOut), INVALID_ARGUMENT, naming each field and what is wrong with it."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in exc.errors()[:10]
    )  # at most ten: a hostile body cannot make the answer large
    return JSONResponse({"error": "INVALID_ARGUMENT", "detail": problems}, status_code=422)


HTTP_ERRORS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def http_error_response(_: Request, exc: Exception) -> JSONResponse:
    """The framework's own refusals (a body that is not JSON: 400, an unknown path: 404) in the
    one error body."""
    assert isinstance(exc, StarletteHTTPException)
    name = HTTP_ERRORS.get(exc.status_code, f"HTTP_{exc.status_code}")
    body = {"error": name, "detail": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def error_response(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TandemError)
    status_name, http_status = status_of(exc)
    headers = {}
    body = {"error": status_name, "detail": str(exc)}
    if isinstance(exc, BudgetExhausted):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        body["retry_after_ms"] = str(int(exc.retry_after_s * 1000) + 1)
    return JSONResponse(body, status_code=http_status, headers=headers)
