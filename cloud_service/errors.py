"""Domain errors and the one table that maps them to gRPC status codes and HTTP statuses."""

from __future__ import annotations

import grpc


class TandemError(Exception):
    """Base of every error a caller may see; the message is safe to show to the device."""


class InvalidArgument(TandemError):
    """Malformed or out-of-range input; nothing was changed."""


class Unauthenticated(TandemError):
    """Missing or wrong device token."""


class NotFound(TandemError):
    """The thing asked for does not exist (e.g. no device model published yet)."""


class BudgetExhausted(TandemError):
    """The global request budget is spent; retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"request budget exhausted; retry after {retry_after_s:.3f} s")
        self.retry_after_s = retry_after_s


class Unavailable(TandemError):
    """A dependency needed to do this durably is down (e.g. Redis for events); retry later."""


class Unimplemented(TandemError):
    """The call exists in the contract but not yet in this service."""


class DeadlineExceeded(TandemError):
    """The caller's deadline passed before the work could start."""


STATUS: dict[type[TandemError], tuple[grpc.StatusCode, int]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, 422),
    Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, 401),
    NotFound: (grpc.StatusCode.NOT_FOUND, 404),
    BudgetExhausted: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, 503),
    Unimplemented: (grpc.StatusCode.UNIMPLEMENTED, 501),
    DeadlineExceeded: (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
}


def status_of(error: TandemError) -> tuple[grpc.StatusCode, int]:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL, 500
