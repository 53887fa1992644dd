"""Build the FastAPI app (a factory, so tests build it with fakes and `helpline run` with the real parts)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpline.answering.rag import RAGPipeline
from helpline.platform.errors import HelplineError
from helpline.platform.lazy_imports import require
from helpline.platform.workspace import Workspace
from helpline.serving.connectors import CHECK_EVERY_S, run_due, writes_kb
from helpline.serving.gateway.admin_router import admin
from helpline.serving.gateway.api_router import router
from helpline.serving.gateway.auth import Principal, presented_key, requires
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.console_jobs import console_jobs, runner_for
from helpline.serving.gateway.console_router import console
from helpline.serving.gateway.errors import new_request_id, to_error_response
from helpline.serving.gateway.job_runner import JobRunner
from helpline.serving.gateway.limits import Admission, BodySizeLimit
from helpline.serving.gateway.metrics import Metrics
from helpline.serving.gateway.service import ChatService
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.gateway.store_db import STORE_ERRORS
from helpline.serving.kb_admin import KBAdmin
from helpline.serving.routing import ModelRouter

Readiness = Callable[[], Awaitable[dict[str, dict[str, Any]]]]
log = logging.getLogger("helpline.gateway")
#: Requests that change something: a failed one is audited (a failed chat is in the conversation log).
_ACTIONS = {"POST", "PUT", "PATCH", "DELETE"}
_NOT_AUDITED = {"/v1/chat/completions"}
#: How often a serving gateway purges turns past ``gateway.retention_days`` (it purges at startup too).
PURGE_EVERY_S = 24 * 3600.0


def create_app(
    *,
    pipeline: RAGPipeline,
    router: ModelRouter,
    store: GatewayStore,
    kb: Any = None,
    limits: GatewayLimits | None = None,
    readiness: Readiness | None = None,
    retention_days: int | None = None,
    admission: Admission | None = None,
    connector_check_s: float = CHECK_EVERY_S,
    job_runner: Literal["embedded", "external"] = "embedded",
) -> FastAPI:
    """The gateway, wired from its parts (all passed in; no globals).

    The API description is served at ``/openapi.json`` to engineer keys only; the interactive pages
    (``/docs``, ``/redoc``) are off, since a browser cannot send a key for the description they load.
    ``retention_days``: logged turns older than that are purged at startup and then daily. ``admission``: the
    rate limit and concurrency cap (default: this process's own, from ``limits``). ``connector_check_s``: how often
    due knowledge-base connectors are looked for. ``job_runner``: ``embedded`` runs console jobs in this process
    (a thread started with the app), ``external`` leaves them to `helpline worker` (``console_jobs``).
    """
    limits = limits or GatewayLimits()
    workspace = Workspace.at(router.registry.db_path.parent)
    connectors = None if kb is None else (KBAdmin(kb), workspace.crawl_state, connector_check_s)
    runner = runner_for(store, workspace)
    embedded = runner if job_runner == "embedded" else None
    lifespan = _lifespan(store, retention_days, connectors=connectors, jobs=embedded)
    app = FastAPI(
        title="helpline gateway", version="0.2.0", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    metrics = Metrics()
    router.follow_share(lambda: _stored_share(store))
    app.state.router = router
    app.state.store = store
    app.state.metrics = metrics
    app.state.kb_admin = KBAdmin(kb) if kb is not None else None
    app.state.job_runner, app.state.job_runner_embedded = runner, embedded is not None
    app.state.chat_service = ChatService(
        pipeline=pipeline, router=router, store=store, limits=limits, metrics=metrics, admission=admission
    )
    app.state.readiness = readiness or _always_ready
    app.include_router(router_with_admin())
    app.include_router(console)  # what the UI needs beyond the OpenAI and admin routes
    app.include_router(console_jobs)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Principal = Depends(requires("engineer"))) -> JSONResponse:
        return JSONResponse(app.openapi())

    # Storage errors get handlers of their own, so a full disk is answered (507) like any expected failure
    # rather than as a server error that Starlette re-raises after answering.
    for exc_type in (HelplineError, RequestValidationError, HTTPException, *STORE_ERRORS, OSError, Exception):

        @app.exception_handler(exc_type)
        async def _to_error(request: Request, exc: Exception) -> Any:
            principal: Principal | None = getattr(request.state, "principal", None)
            staff = principal is not None and principal.role != "customer"
            response = to_error_response(exc, request_id=new_request_id(), staff=staff)
            await _audit_failure(request, response.status_code, principal, exc)
            return response

    app.add_middleware(CountRequests, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes, max_upload_bytes=limits.max_upload_bytes)
    return app


def router_with_admin():
    APIRouter = require("fastapi", "serve").APIRouter

    combined = APIRouter()
    combined.include_router(router)
    combined.include_router(admin)
    return combined


async def _audit_failure(request: Request, status: int, principal: Principal | None, exc: Exception) -> None:
    """Audit a refused key (401/403) and a failed change. Never the presented key, nor any part of it:
    only whether one was sent. The write runs in a worker thread; an audit that cannot be written is
    logged and does not change the response."""
    target = f"{request.method} {request.url.path}"
    actor = principal.actor if principal is not None else "anonymous"
    if status in (401, 403):
        action, detail = "auth.denied", {"status": status, "key_presented": presented_key(request) is not None}
    elif principal is not None and request.method in _ACTIONS and request.url.path not in _NOT_AUDITED:
        action, detail = "request.failed", {"status": status, "error": str(exc)[:500]}
    else:
        return
    store = request.app.state.store
    try:
        await anyio.to_thread.run_sync(lambda: store.audit(actor, action, target, detail))
    except STORE_ERRORS as e:
        log.error("audit of %s (%s) not written: %s", target, action, e)


def _lifespan(
    store: GatewayStore, days: int | None, *, connectors: tuple[KBAdmin, Path, float] | None, jobs: JobRunner | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: with ``days``, purge expired turns before the first request, then daily while serving;
    with a knowledge base this gateway writes, run the knowledge-base connectors that are due (``connectors.py``);
    with ``jobs``, run console jobs in a thread (``job_runner``; the jobs outlive the gateway)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if days is not None:
            await _purge(store, days)
        async with anyio.create_task_group() as tasks:
            if days is not None:
                tasks.start_soon(_purge_daily, store, days)
            if connectors is not None:
                tasks.start_soon(_connectors_loop, store, *connectors)
            stop = threading.Event()
            thread = None if jobs is None else threading.Thread(target=jobs.run, args=(stop,), daemon=True)
            if thread is not None:
                thread.start()
            try:
                yield
            finally:
                stop.set()
                if thread is not None:
                    await anyio.to_thread.run_sync(thread.join, 10.0)
            tasks.cancel_scope.cancel()

    return lifespan


async def _connectors_loop(store: GatewayStore, admin: KBAdmin, crawl_state: Path, every_s: float) -> None:
    """Every ``every_s``, the due connectors, in a worker thread, when this gateway writes the knowledge base
    (read-only replicas leave them to the one that does). A failure is logged and never stops serving."""
    while True:
        await anyio.sleep(every_s)
        if not writes_kb(admin.kb):
            continue
        try:
            await anyio.to_thread.run_sync(lambda: run_due(store, admin, crawl_state=crawl_state))
        except Exception as e:  # a store or index failure: logged, tried again at the next look
            log.error("running knowledge-base connectors failed: %s: %s", type(e).__name__, e)


async def _purge_daily(store: GatewayStore, days: int) -> None:
    while True:
        await anyio.sleep(PURGE_EVERY_S)
        await _purge(store, days)


async def _purge(store: GatewayStore, days: int) -> None:
    """One purge in a worker thread; a failure is logged and retried at the next one, never stops serving."""
    try:
        counts = await anyio.to_thread.run_sync(lambda: store.purge_expired(days, actor="gateway"))
    except STORE_ERRORS as e:
        log.error("purging turns older than %d days failed: %s", days, e)
        return
    if counts["turns"]:
        log.info("purged %d turns older than %d days", counts["turns"], days)


def _stored_share(store: GatewayStore) -> float | None:
    """The canary share last set through the admin route or `helpline improve` (None: never set)."""
    saved = store.get_setting("canary_share")
    return float(saved) if saved is not None else None


async def _always_ready() -> dict[str, dict[str, Any]]:
    return {"engine": {"ok": True}, "index": {"ok": True}, "embedder": {"ok": True}}


class CountRequests:
    """ASGI middleware counting responses by route and status (pure ASGI, so streaming and
    client disconnects pass through untouched)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
