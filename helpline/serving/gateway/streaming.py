"""The pieces of a streamed answer: the engine's deltas under the upstream timeout, the served text cut
into deltas, and the event stream that gives its turn back however the response ends.

A streamed turn holds a concurrency slot from admission (so limits still answer with a status code)
until it finishes. The SSE generator finishes it at its own end; a response that ends before the
generator ran to its end (the client gone before the first chunk, a failed send, a cancelled task) closes
the :class:`EventStream`, and closing finishes the turn if the generator never did.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from helpline.engines.protocol import Generator, astream
from helpline.platform.errors import EngineError, HelplineError
from helpline.platform.schemas import ChatMessage


class EventStream:
    """An SSE event generator with a close that runs ``on_close`` once, whether or not the generator
    ever started (an async generator closed before its first step runs none of its ``finally``)."""

    def __init__(self, events: AsyncGenerator[str, None], *, on_close: Callable[[], Awaitable[None]]) -> None:
        self._events = events
        self._on_close: Callable[[], Awaitable[None]] | None = on_close

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> str:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                await on_close()


class EventStreamResponse(StreamingResponse):
    """A StreamingResponse that closes its event stream however the response ends (Starlette leaves an
    unfinished body iterator as it is)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


async def engine_deltas(
    generator: Generator,
    messages: list[ChatMessage],
    *,
    max_tokens: int,
    temperature: float,
    timeout_s: float,
    on_first: Callable[[], None],
) -> AsyncIterator[str]:
    """The engine's deltas, each awaited with the upstream timeout; ``on_first`` is called at the first
    (time to first token). Any failure of the engine becomes an EngineError."""
    stream = astream(generator, messages, max_tokens=max_tokens, temperature=temperature)
    first = True
    try:
        while True:
            try:
                # In this task, not a task of its own as asyncio.wait_for would make: Python 3.11's wait_for loses a
                # cancellation that arrives as the delta does, and a client gone away would leave it generating.
                async with asyncio.timeout(timeout_s):
                    delta = await anext(stream)
            except StopAsyncIteration:
                return
            if first:
                on_first()
                first = False
            yield delta
    except (HelplineError, TimeoutError):
        raise
    except Exception as e:
        raise EngineError(f"the engine failed mid-answer: {type(e).__name__}: {e}") from e
    finally:
        await stream.aclose()


def pieces(text: str, size: int = 24) -> list[str]:
    """The served text as stream deltas of about ``size`` characters, cut after whitespace; joined,
    they are the text exactly."""
    out: list[str] = []
    for word in re.findall(r"\s*\S+\s*", text) or [text]:
        if out and len(out[-1]) < size:
            out[-1] += word
        else:
            out.append(word)
    return [p for p in out if p]
