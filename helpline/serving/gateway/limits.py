"""Overload protection: per-key rate limit, a concurrency cap, and a request-body size cap."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpline.platform.errors import HelplineError
from helpline.serving.gateway.errors import error_body


class RateLimited(HelplineError):
    """A key sent more requests than its rate allows."""

    http_status = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "rate limit exceeded for this API key", hint=f"retry after {retry_after:.0f} s, or ask for a higher limit"
        )
        self.retry_after = max(1, round(retry_after + 0.5))


class Overloaded(HelplineError):
    """Too many requests are generating at once."""

    http_status = 503
    public = True  # says nothing about the engine: the client may read it

    def __init__(self, retry_after: int) -> None:
        super().__init__("the assistant is at capacity", hint=f"retry after {retry_after} s")
        self.retry_after = retry_after


class PayloadTooLarge(HTTPException):
    """A chunked body grew over the limit while it was read. An HTTPException, because FastAPI turns any
    other error raised while it reads a body into 400 "error parsing the body"."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


@dataclass
class RateLimiter:
    """A token bucket per key: ``burst`` at once, refilled at ``per_minute``."""

    per_minute: int
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise RateLimited with the wait until the next one."""
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise RateLimited((1.0 - tokens) / rate)
            self._buckets[key] = (tokens - 1.0, now)


@dataclass
class ConcurrencyGate:
    """Admits at most ``limit`` requests at once; the rest get 503 + Retry-After at once (no queue
    that would hide overload behind ever-growing latency)."""

    limit: int
    retry_after_s: int = 2
    active: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self) -> object:
        """Take a slot or raise Overloaded; returns the lease to give back (none here: a count)."""
        with self._lock:
            if self.active >= self.limit:
                raise Overloaded(self.retry_after_s)
            self.active += 1
        return None

    def release(self, lease: object = None) -> None:
        with self._lock:
            self.active = max(0, self.active - 1)


class RateLimit(Protocol):
    """A per-key request rate: ``check`` counts one request or raises RateLimited."""

    def check(self, key: str) -> None: ...


class Slots(Protocol):
    """A concurrency cap: ``acquire`` takes a slot (returning its lease) or raises Overloaded."""

    def acquire(self) -> object: ...

    def release(self, lease: object = None) -> None: ...


@dataclass(frozen=True)
class Admission:
    """How a gateway admits chats: the rate per key and the concurrency cap, in-process (the default) or shared by
    the replicas through Redis (``serving/gateway/shared_limits.py``)."""

    rate: RateLimit
    gate: Slots


class BodySizeLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` (by Content-Length, or while reading a
    chunked body) before any of it is parsed."""

    #: File uploads (PDF, DOCX) are far larger than any chat request; only these paths get the upload cap.
    UPLOAD_PREFIXES = ("/console/kb/files",)

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = str(scope.get("path", "")).startswith(self.UPLOAD_PREFIXES)
        limit = self.max_upload_bytes if upload else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Send, limit: int) -> None:

        body = json.dumps(error_body(413, f"request body over {limit} bytes", "invalid_request_error")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
