"""The interface every generation engine offers, and async adapters the gateway uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage


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
