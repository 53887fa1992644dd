"""Routes: thin functions that validate, call the service and shape the response."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from helpline.serving.gateway.protocol import ChatCompletionRequest, ChatCompletionResponse

router = APIRouter()


@router.get("/health")
def health() -> dict:
    """Liveness: the gateway process answers."""
    return {"status": "ok"}


@router.get("/v1/models")
def models(request: Request) -> dict:
    names = request.app.state.model_names
    return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "helpline"} for n in names]}


@router.post("/v1/chat/completions", response_model=None)
def chat_completions(body: ChatCompletionRequest, request: Request) -> ChatCompletionResponse | StreamingResponse:
    service = request.app.state.chat_service
    if body.stream:
        return StreamingResponse(service.stream(body), media_type="text/event-stream")
    return service.complete(body)
