"""Request and response models of the gateway: OpenAI-compatible, plus documented extras.

Extras on a chat completion (and on the final stream event): ``citations`` (the passages the
answer is based on, best first), ``abstained`` (true when the assistant said it does not know and
offered a person), ``conversation_id`` (send it back as an extra body field to continue a
conversation; it also decides the canary bucket), ``outcome`` (``answered``: the generated answer;
``fallback``: the help centre's own sentences quoted, because the generated answer was not supported
or missed the point; ``handoff``: no passage answers, so how to reach a person). A streamed answer is
decided before its first delta is sent, so what is streamed is what a whole answer would have been.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from helpline.platform.schemas import Access, ChatMessage, Citation


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class RequestMessage(BaseModel):
    """A chat message as OpenAI clients send it (content may be a list of text parts)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]

    def to_chat(self) -> ChatMessage:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return ChatMessage(role="system" if self.role == "developer" else self.role, content=text)


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`. Unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field("helpline-support", description="helpline-support, helpline-support-canary or a model name.")
    messages: list[RequestMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    user: str | None = None
    conversation_id: str | None = Field(None, max_length=128, description="Extra: continue a conversation.")

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, messages: list[RequestMessage]) -> list[RequestMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must come from the user")
        return messages

    def chat_messages(self) -> list[ChatMessage]:
        return [m.to_chat() for m in self.messages]

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ChoiceMessage
    finish_reason: str = "stop"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class ChatCompletionResponse(BaseModel):
    """An OpenAI chat completion with helpline's extra fields."""

    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage = Field(default_factory=Usage)
    citations: list[Citation] = Field(default_factory=list)
    abstained: bool = False
    outcome: Literal["answered", "fallback", "handoff", "corrected"] = Field(
        "answered",
        description="answered (generated), fallback (the passage quoted), handoff (no answer) or corrected (staff's "
        "correction of the same question, served again)",
    )
    conversation_id: str = ""


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: did this answer help?"""

    response_id: str = Field(description="The `id` of the chat completion.")
    rating: Literal["up", "down"]
    comment: str = Field("", max_length=2000)
    correction: str | None = Field(None, max_length=8000, description="The right answer (staff reviewing).")


class DocumentIn(BaseModel):
    """A knowledge-base document uploaded as JSON."""

    doc_id: str = Field(min_length=1, max_length=200, pattern=r"^[\w./-]+$")
    title: str = Field(min_length=1, max_length=300)
    text: str = Field(min_length=1)
    access: Access = Field(description="Who may see it: public (customers too) or internal (staff). Required.")
    metadata: dict[str, str] = Field(default_factory=dict)


class DocumentsUpload(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1, max_length=500)


class SyncRequest(BaseModel):
    folder: str = Field(
        description="What to mirror into the knowledge base: a folder on the gateway's machine, a help-centre export "
        "there (KIND:PATH; KIND: zendesk, intercom, confluence, notion), or a website's start page or sitemap "
        "(https://...), crawled."
    )


class ConnectorRequest(BaseModel):
    name: str = Field(description="A slug naming the connector, e.g. zendesk-en.")
    source: str = Field(
        description="KIND:PATH (zendesk, intercom, confluence, notion: an export on the gateway's machine), or https://..."
    )
    every: str = Field("1d", description="How often it syncs: 6h, 1d, 1h30m (at least 5 minutes).")


class PromoteRequest(BaseModel):
    name: str = Field(description="Registered model or adapter.")
    alias: Literal["production", "canary"] = "production"
    force: bool = Field(False, description="Promote without a passing gate report (admin role only; audited).")


class RollbackRequest(BaseModel):
    alias: Literal["production", "canary"] = "production"


class CanaryRequest(BaseModel):
    percent: float = Field(ge=0, le=100, description="Share of new conversations sent to the canary.")


class KeyRequest(BaseModel):
    role: Literal["customer", "staff", "engineer", "admin"]
    name: str = Field("", max_length=100)


def model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "helpline"}
