"""Errors as TF Serving reports them: a canonical status code plus a message.

The HTTP mapping is TF Serving's own (model_servers/http_server.cc, ToHTTPStatusCode), so a client sees the
same HTTP status from our server and from the real one.
"""
from __future__ import annotations

from fraud.errors import FraudError

OK = "OK"
CANCELLED = "CANCELLED"
UNKNOWN = "UNKNOWN"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
NOT_FOUND = "NOT_FOUND"
ALREADY_EXISTS = "ALREADY_EXISTS"
PERMISSION_DENIED = "PERMISSION_DENIED"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
ABORTED = "ABORTED"
OUT_OF_RANGE = "OUT_OF_RANGE"
UNIMPLEMENTED = "UNIMPLEMENTED"
INTERNAL = "INTERNAL"
UNAVAILABLE = "UNAVAILABLE"
DATA_LOSS = "DATA_LOSS"
UNAUTHENTICATED = "UNAUTHENTICATED"

# Canonical code -> (numeric code, HTTP status)
CODES = {
    OK: (0, 200),
    CANCELLED: (1, 499),
    UNKNOWN: (2, 500),
    INVALID_ARGUMENT: (3, 400),
    DEADLINE_EXCEEDED: (4, 504),
    NOT_FOUND: (5, 404),
    ALREADY_EXISTS: (6, 409),
    PERMISSION_DENIED: (7, 403),
    RESOURCE_EXHAUSTED: (8, 429),
    FAILED_PRECONDITION: (9, 400),
    ABORTED: (10, 409),
    OUT_OF_RANGE: (11, 400),
    UNIMPLEMENTED: (12, 501),
    INTERNAL: (13, 500),
    UNAVAILABLE: (14, 503),
    DATA_LOSS: (15, 500),
    UNAUTHENTICATED: (16, 401),
}
NAME_BY_NUMBER = {number: name for name, (number, _) in CODES.items()}


class ServingError(FraudError):
    """A request failed with a canonical status; `message` is what the client reads."""

    def __init__(self, code: str, message: str):
        if code not in CODES:
            raise ValueError(f"unknown status code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return CODES[self.code][1]

    @property
    def number(self) -> int:
        return CODES[self.code][0]

    def __repr__(self) -> str:
        return f"ServingError({self.code}, {self.message!r})"


def invalid(message: str) -> ServingError:
    return ServingError(INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(NOT_FOUND, message)
