"""Domain errors and the one table both transports map them through: gRPC status name, HTTP status.

The table holds the status *names* (grpc.StatusCode members by name), so the domain layer does
not import the transport library; rpc/ turns a name into its grpc.StatusCode.
"""

from __future__ import annotations


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


class DeadlineExceeded(TandemError):
    """The caller's deadline passed before the work could start."""


STATUS: dict[type[TandemError], tuple[str, int]] = {
    InvalidArgument: ("INVALID_ARGUMENT", 422),
    Unauthenticated: ("UNAUTHENTICATED", 401),
    NotFound: ("NOT_FOUND", 404),
    BudgetExhausted: ("RESOURCE_EXHAUSTED", 429),
    Unavailable: ("UNAVAILABLE", 503),
    DeadlineExceeded: ("DEADLINE_EXCEEDED", 504),
}


def status_of(error: TandemError) -> tuple[str, int]:
    """(gRPC status name, HTTP status) of a domain error; INTERNAL / 500 for anything unmapped."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return "INTERNAL", 500
