"""The interface every generation engine offers, and async adapters the gateway uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from helpline.platform.errors import EngineError
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage

#: Tokens a chat template adds around each message (role markers, separators), counted generously.
MESSAGE_OVERHEAD_TOKENS = 8


class ContextTooLong(EngineError):
    """The prompt and the answer it asks room for do not fit the model's context."""

    http_status = 413


@dataclass
class Generation:
    """One completed answer."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: "stop" (the model ended its turn) or "length" (cut at max_tokens), as in the OpenAI API.
    finish_reason: str = "stop"


class StreamEnd(str):
    """The last item a stream may yield: an empty delta that says why generation ended.

    It is a ``str`` (the empty string) so code that only joins deltas keeps working; the gateway reads
    ``reason`` ("stop" or "length") into the final SSE event's ``finish_reason``.
    """

    reason: str

    def __new__(cls, reason: str) -> StreamEnd:
        marker = super().__new__(cls, "")
        marker.reason = reason
        return marker


@runtime_checkable
class Generator(Protocol):
    """Turns a conversation into an answer, whole or streamed.

    Engines that can serve many requests at once (the vLLM HTTP engine) may also offer
    ``agenerate``/``astream``; :func:`agenerate` and :func:`astream` use them when present and
    otherwise run the synchronous methods in a worker thread.
    """

    name: str

    def generate(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Generation: ...

    def stream(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Iterator[str]: ...


def context_length(generator: Generator) -> int | None:
    """The model's context in tokens (prompt and answer), when the engine reports it (``max_model_len``)."""
    length = getattr(generator, "max_model_len", None)
    return int(length) if length else None


def count_prompt_tokens(generator: Generator, messages: list[ChatMessage]) -> int:
    """Tokens ``messages`` take as a prompt: the engine's own count (``count_tokens``, from its tokenizer)
    when it has one, else :func:`estimate_tokens`."""
    count = getattr(generator, "count_tokens", None)
    return int(count(messages)) if count is not None else estimate_tokens(messages)


def estimate_tokens(messages: list[ChatMessage]) -> int:
    """A conservative token count without a tokenizer: three ASCII characters a token (English runs at
    about four) and a token for every other character (CJK, emoji, accented letters), plus the template's
    overhead per message. It errs high, so a prompt it passes fits."""
    total = MESSAGE_OVERHEAD_TOKENS
    for m in messages:
        ascii_chars = len(m.content.encode("ascii", "ignore"))
        total += -(-ascii_chars // 3) + (len(m.content) - ascii_chars) + MESSAGE_OVERHEAD_TOKENS
    return total


async def agenerate(
    generator: Generator, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0
) -> Generation:
    """``generator.agenerate`` if it has one, else ``generate`` in a worker thread."""
    native = getattr(generator, "agenerate", None)
    if native is not None:
        return await native(messages, max_tokens=max_tokens, temperature=temperature)
    require("anyio.to_thread", "serve")
    anyio = require("anyio", "serve")

    return await anyio.to_thread.run_sync(
        lambda: generator.generate(messages, max_tokens=max_tokens, temperature=temperature)
    )


async def astream(
    generator: Generator, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0
) -> AsyncIterator[str]:
    """``generator.astream`` if it has one, else ``stream`` iterated in a worker thread."""
    native = getattr(generator, "astream", None)
    if native is not None:
        async for delta in native(messages, max_tokens=max_tokens, temperature=temperature):
            yield delta
        return
    iterate_in_threadpool = require("starlette.concurrency", "serve").iterate_in_threadpool

    async for delta in iterate_in_threadpool(
        generator.stream(messages, max_tokens=max_tokens, temperature=temperature)
    ):
        yield delta
