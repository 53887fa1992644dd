"""The chat service: the logic behind the chat route (the router stays thin)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from helpline.platform.schemas import ChatMessage
from helpline.serving.gateway.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChoiceMessage,
)
from helpline.serving.rag import RAGPipeline, citations


class ChatService:
    """Answers chat requests with the RAG pipeline."""

    def __init__(self, pipeline: RAGPipeline) -> None:
        self.pipeline = pipeline

    def complete(self, request: ChatCompletionRequest, *, role: str = "customer") -> ChatCompletionResponse:
        answer = self.pipeline.answer(request.messages, role=role)
        return ChatCompletionResponse(
            model=request.model,
            choices=[Choice(message=ChoiceMessage(content=answer.answer))],
            citations=answer.citations,
            abstained=answer.abstained,
        )

    def stream(self, request: ChatCompletionRequest, *, role: str = "customer") -> Iterator[str]:
        """Server-sent events: content deltas, then a final event carrying the citations."""
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        p = self.pipeline
        passages = p.retrieve(request.messages, role=role)

        def event(delta: dict, finish: str | None = None, **extra: object) -> str:
            body = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(body)}\n\n"

        yield event({"role": "assistant", "content": ""})
        if not passages or passages[0].score < p.min_score:
            yield event({"content": p.prompt.abstention(p.handoff)})  # type: ignore[union-attr]
            yield event({}, "stop", citations=[], abstained=True)
        else:
            messages: list[ChatMessage] = p.prompt.build(request.messages, passages)  # type: ignore[union-attr]
            for delta in p.generator.stream(
                messages,
                max_tokens=request.max_tokens or p.max_tokens,
                temperature=request.temperature if request.temperature is not None else p.temperature,
            ):
                yield event({"content": delta})
            cited = [c.model_dump() for c in citations(passages)]
            yield event({}, "stop", citations=cited, abstained=False)
        yield "data: [DONE]\n\n"
