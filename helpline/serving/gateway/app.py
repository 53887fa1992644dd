"""Build the FastAPI app (a factory, so tests build it with fakes)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from helpline.platform.errors import HelplineError
from helpline.serving.gateway.api_router import router
from helpline.serving.gateway.service import ChatService
from helpline.serving.rag import RAGPipeline


def error_response(status: int, message: str, kind: str) -> JSONResponse:
    """The one OpenAI-shaped error body every failure becomes."""
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": status}})


def create_app(pipeline: RAGPipeline, *, model_names: list[str] | None = None) -> FastAPI:
    app = FastAPI(title="helpline gateway", version="0.1.0")
    app.state.chat_service = ChatService(pipeline)
    app.state.model_names = model_names or ["helpline-support"]
    app.include_router(router)

    @app.exception_handler(HelplineError)
    async def _helpline_error(_: Request, exc: HelplineError) -> JSONResponse:
        return error_response(exc.http_status, str(exc), type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(400, f"invalid request: {problems}", "invalid_request_error")

    return app
