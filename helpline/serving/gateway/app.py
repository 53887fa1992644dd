"""Build the FastAPI app (a factory, so tests build it with fakes and `helpline run` with the real parts)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from helpline.answering.rag import RAGPipeline
from helpline.platform.errors import HelplineError
from helpline.platform.lazy_imports import require
from helpline.serving.gateway.admin_router import admin
from helpline.serving.gateway.api_router import router
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.console_jobs import console_jobs
from helpline.serving.gateway.console_router import console
from helpline.serving.gateway.errors import to_error_response
from helpline.serving.gateway.limits import BodySizeLimit
from helpline.serving.gateway.metrics import Metrics
from helpline.serving.gateway.service import ChatService
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.kb_admin import KBAdmin
from helpline.serving.routing import ModelRouter

Readiness = Callable[[], Awaitable[dict[str, dict[str, Any]]]]


def create_app(
    *,
    pipeline: RAGPipeline,
    router: ModelRouter,
    store: GatewayStore,
    kb: Any = None,
    limits: GatewayLimits | None = None,
    readiness: Readiness | None = None,
) -> FastAPI:
    """The gateway, wired from its parts (all passed in; no globals)."""
    limits = limits or GatewayLimits()
    app = FastAPI(title="helpline gateway", version="0.2.0")
    metrics = Metrics()
    saved_share = store.get_setting("canary_share")
    if saved_share is not None:
        router.set_canary_share(float(saved_share))
    app.state.router = router
    app.state.store = store
    app.state.metrics = metrics
    app.state.kb_admin = KBAdmin(kb) if kb is not None else None
    app.state.chat_service = ChatService(pipeline=pipeline, router=router, store=store, limits=limits, metrics=metrics)
    app.state.readiness = readiness or _always_ready
    app.include_router(router_with_admin())
    app.include_router(console)  # what the UI needs beyond the OpenAI and admin routes
    app.include_router(console_jobs)

    for exc_type in (HelplineError, RequestValidationError, HTTPException, Exception):

        @app.exception_handler(exc_type)
        async def _to_error(_: Request, exc: Exception) -> Any:
            return to_error_response(exc)

    app.add_middleware(CountRequests, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes, max_upload_bytes=limits.max_upload_bytes)
    return app


def router_with_admin():
    APIRouter = require("fastapi", "serve").APIRouter

    combined = APIRouter()
    combined.include_router(router)
    combined.include_router(admin)
    return combined


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
