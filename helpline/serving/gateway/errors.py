"""The one function that turns any exception into an OpenAI-shaped error response."""

from __future__ import annotations

import logging

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
}


def error_body(status: int, message: str, kind: str | None = None) -> dict:
    """``{"error": {"message", "type", "code"}}``, the shape OpenAI clients parse."""
    return {"error": {"message": message, "type": kind or _TYPES.get(status, "server_error"), "code": status}}


def to_error_response(exc: Exception) -> JSONResponse:
    """Every failure, expected or not, leaves the gateway through here."""
    headers: dict[str, str] = {}
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        status, message = 400, f"invalid request: {problems}"
    elif isinstance(exc, HTTPException):
        status, message = exc.status_code, str(exc.detail)
        headers.update(exc.headers or {})
    elif isinstance(exc, HelplineError):
        status, message = exc.http_status, str(exc)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is None and status == 503:
            retry_after = 5
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
    elif isinstance(exc, TimeoutError):
        status, message = 504, "the engine did not answer in time"
    else:
        log.exception("unhandled error", exc_info=exc)
        status, message = 500, f"internal error: {type(exc).__name__}"
    return JSONResponse(status_code=status, content=error_body(status, message), headers=headers)
