"""The one function that turns any exception into an OpenAI-shaped error response.

What a client reads is written for it: a request error (4xx) says what to fix; a server fault's own
text (an engine's error names its address and the adapter; an exception names the code) goes to the
log under a request id, and the client gets a generic line with that id to quote. Staff and engineers
are shown a HelplineError's message in full, since they run the engine.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import uuid

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from helpline.platform.errors import HelplineError

log = logging.getLogger("helpline.gateway")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
    507: "insufficient_storage_error",
}
_GENERIC = {
    503: "the assistant is unavailable right now; please try again shortly",
    504: "the assistant did not answer in time; please try again",
}


#: What SQLite and the OS say when the workspace's disk is full. A full disk also shows as "disk I/O
#: error": with WAL, a new connection cannot set up its shared-memory file, so even a key check fails.
#: PostgreSQL's (``database_url``) says so by its SQLSTATE, disk_full (psycopg's errors carry it).
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_SQLITE = ("database or disk is full", "disk i/o error")
_FULL_SQLSTATE = "53100"
STORAGE_FULL = (
    "the service cannot save anything right now: its storage is full, and nothing was saved; please try again later"
)
STORAGE_RETRY_AFTER_S = 30


def storage_full(exc: BaseException) -> bool:
    """Is ``exc`` (or what caused it) the workspace's disk being full?"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return True
        if isinstance(seen, sqlite3.OperationalError) and any(m in str(seen).lower() for m in _FULL_SQLITE):
            return True
        if getattr(seen, "sqlstate", None) == _FULL_SQLSTATE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


def error_body(status: int, message: str, kind: str | None = None, *, request_id: str | None = None) -> dict:
    """``{"error": {"message", "type", "code"}}``, the shape OpenAI clients parse (and ``request_id``)."""
    error = {"message": message, "type": kind or _TYPES.get(status, "server_error"), "code": status}
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def client_message(exc: HelplineError, request_id: str, *, staff: bool = False) -> str:
    """What the caller is told of ``exc``: its message when it is about the request (below 500), marked
    ``public`` (capacity, timeouts) or the caller is staff; otherwise a generic line with the request
    id, and the message goes to the log under that id."""
    status = exc.http_status
    if status < 500 or getattr(exc, "public", False) or staff:
        return str(exc)
    log.warning("request %s failed: %s: %s", request_id, type(exc).__name__, exc)
    return f"{_GENERIC.get(status, 'the assistant hit an internal error')} (request id {request_id})"


def to_error_response(exc: Exception, *, request_id: str | None = None, staff: bool = False) -> JSONResponse:
    """Every failure, expected or not, leaves the gateway through here."""
    request_id = request_id or new_request_id()
    headers: dict[str, str] = {"X-Request-ID": request_id}
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        status, message = 400, f"invalid request: {problems}"
    elif isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        headers.update(exc.headers or {})
    elif isinstance(exc, HelplineError):
        status, message = exc.http_status, client_message(exc, request_id, staff=staff)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None and status == 503:
            retry_after = 5
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
    elif storage_full(exc):
        # Every caller reads that storage is full (it is no secret, and says why to retry later); the cause is logged.
        log.error("request %s: storage full: %s: %s", request_id, type(exc).__name__, exc)
        status, message = 507, f"{STORAGE_FULL} (request id {request_id})"
        headers["Retry-After"] = str(STORAGE_RETRY_AFTER_S)
    elif isinstance(exc, TimeoutError):
        status, message = 504, f"{_GENERIC[504]} (request id {request_id})"
    else:
        log.exception("request %s: unhandled error", request_id, exc_info=exc)
        status, message = 500, f"internal error (request id {request_id})"
    return JSONResponse(status_code=status, content=error_body(status, message, request_id=request_id), headers=headers)
