"""The one place where errors become HTTP statuses and metric labels.

    InputError            400  client_error   the tensors do not fit the model
    ProtocolError         400  client_error   not an OIP request (not JSON, bad binary sizes)
    PayloadTooLargeError  413  client_error   body over --max-body-bytes
    ModelNotFoundError    404  client_error   no such model or version here
    OverloadedError       503  overloaded     --max-queue requests already in flight
    NotReadyError         503  unavailable    still loading, or shutting down
    anything else         500  server_error   reason InternalError (a backend failure, a bug)

``status`` and ``reason`` are metric label values, so both come from the fixed sets
``STATUSES`` and ``REASONS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from neofleet.errors import NeofleetError
from neofleet.runtime.errors import (
    InputError,
    ModelNotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    ProtocolError,
)

OK = "ok"
CLIENT_ERROR = "client_error"
OVERLOADED = "overloaded"
UNAVAILABLE = "unavailable"
SERVER_ERROR = "server_error"
STATUSES = (OK, CLIENT_ERROR, OVERLOADED, UNAVAILABLE, SERVER_ERROR)
INTERNAL = "InternalError"

_TABLE: tuple[tuple[type[NeofleetError], int, str], ...] = (
    (InputError, 400, CLIENT_ERROR),
    (ProtocolError, 400, CLIENT_ERROR),
    (PayloadTooLargeError, 413, CLIENT_ERROR),
    (ModelNotFoundError, 404, CLIENT_ERROR),
    (OverloadedError, 503, OVERLOADED),
    (NotReadyError, 503, UNAVAILABLE),
)
REASONS = (*dict.fromkeys(cls.reason for cls, _, _ in _TABLE), INTERNAL)


@dataclass(frozen=True)
class Outcome:
    """How a failed request is answered and counted."""

    http_status: int
    status: str
    reason: str
    message: str


def classify(exc: BaseException) -> Outcome:
    for cls, http_status, status in _TABLE:
        if isinstance(exc, cls):
            return Outcome(http_status, status, cls.reason, str(exc))
    first_line = (str(exc).splitlines() or [""])[0][:300]
    return Outcome(500, SERVER_ERROR, INTERNAL,
                   f"internal error: {type(exc).__name__}: {first_line}".rstrip(": "))
