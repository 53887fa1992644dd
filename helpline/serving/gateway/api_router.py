"""Public routes: thin functions that check the caller, call a service and shape the response."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from helpline.platform.errors import NotFoundError
from helpline.serving.gateway.auth import Principal, requires
from helpline.serving.gateway.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    FeedbackRequest,
    model_card,
)
from helpline.serving.gateway.streaming import EventStreamResponse

router = APIRouter()


@router.get("/health")
def health() -> dict:
    """Liveness: the gateway process answers (no key needed, reveals nothing)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness of the engine, the index and the embedder; 503 until all are ready."""
    checks = await request.app.state.readiness()
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(status_code=200 if ok else 503, content={"ready": ok, "checks": checks})


@router.get("/metrics")
def metrics(request: Request, _: Principal = Depends(requires("engineer"))) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1/models")
def models(request: Request, who: Principal = Depends(requires("customer"))) -> dict:
    """The model ids this key may put in `model`: customers the public names, staff also each chat model."""
    names = request.app.state.router.public_models(aliases_only=who.role == "customer")
    return {"object": "list", "data": [model_card(n) for n in names]}


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, principal: Principal = Depends(requires("customer"))
) -> ChatCompletionResponse | EventStreamResponse:
    """OpenAI-compatible chat, answered from the knowledge base with citations."""
    service = request.app.state.chat_service
    if body.stream:
        events = await service.stream(body, principal)
        return EventStreamResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await service.complete(body, principal)


@router.post("/v1/feedback")
def feedback(body: FeedbackRequest, request: Request, principal: Principal = Depends(requires("customer"))) -> dict:
    """Thumbs up or down (and an optional comment or correction) on a response id: by the key that had
    the conversation, or by staff. Another customer's key gets the 404 an unknown id gets."""
    store = request.app.state.store
    if body.correction is not None and principal.role == "customer":
        body = body.model_copy(update={"correction": None})  # only staff write reference answers
    if principal.role == "customer" and store.turn(body.response_id)["key_id"] != principal.key.id:
        raise NotFoundError(f"no response with id {body.response_id!r}", hint="rate one of your own answers")
    store.add_feedback(
        body.response_id, rating=body.rating, comment=body.comment, correction=body.correction, key_id=principal.key.id
    )
    return {"ok": True, "response_id": body.response_id}
