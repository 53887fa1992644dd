"""The chat service: limits, routing, retrieval, fitting the context, generation, verification, logging.

The router stays thin; everything a chat request goes through is here (the pieces of a streamed answer in
``streaming.py``), in the order of the request path in DESIGN.md. Nothing here blocks the event loop that
serves every open stream: routing, retrieval, counting tokens and writing the log run in worker threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TypeVar

import anyio.to_thread

from helpline.answering.context import fit_to_context
from helpline.answering.decision import Served, repeats
from helpline.answering.rag import Prepared, RAGPipeline, citations
from helpline.engines.protocol import (
    StreamEnd,
    agenerate,
    context_length,
    count_prompt_tokens,
    estimate_tokens,
)
from helpline.platform.errors import ConfigError, HelplineError
from helpline.platform.pii import scrub
from helpline.platform.schemas import ChatMessage
from helpline.serving.gateway.auth import Principal
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.errors import client_message, error_body
from helpline.serving.gateway.limits import Admission, ConcurrencyGate, RateLimiter
from helpline.serving.gateway.metrics import Metrics
from helpline.serving.gateway.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChoiceMessage,
    Usage,
    completion_id,
)
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.gateway.store_db import STORE_ERRORS
from helpline.serving.gateway.streaming import EventStream, engine_deltas, pieces
from helpline.serving.routing import PUBLIC_ALIASES, ModelRouter, Route

log = logging.getLogger("helpline.gateway")
T = TypeVar("T")
#: Threads that wait for retrieval, apart from the worker threads that key checks and other routes run on.
RETRIEVAL_THREADS = 8


class GatewayTimeout(HelplineError):
    http_status = 504
    public = True  # names no address: the client may read it


class RetrievalTimeout(HelplineError):
    """Retrieval did not finish within ``limits.retrieval_timeout_s``: the knowledge base is stuck or overloaded."""

    http_status = 503
    public = True  # names nothing internal: the client may read it

    def __init__(self, seconds: float, retry_after: int) -> None:
        super().__init__(f"retrieval did not finish within {seconds:g} s", hint=f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Turn:
    """One request on its way through the service."""

    id: str
    conversation_id: str
    principal: Principal
    route: Route
    messages: list[ChatMessage]
    prepared: Prepared
    max_tokens: int
    temperature: float
    started: float
    finished: bool = False
    slot: object = None  # the concurrency lease, given back when the turn ends


class ChatService:
    """Answers chat requests: the logic behind `POST /v1/chat/completions`."""

    def __init__(
        self,
        *,
        pipeline: RAGPipeline,
        router: ModelRouter,
        store: GatewayStore,
        limits: GatewayLimits,
        metrics: Metrics,
        admission: Admission | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.router = router
        self.store = store
        self.limits = limits
        self.metrics = metrics
        # In-process by default; shared through Redis across replicas when the gateway is built with redis_url.
        self.rate = admission.rate if admission else RateLimiter(limits.requests_per_minute, limits.burst)
        self.gate = admission.gate if admission else ConcurrencyGate(limits.max_concurrency, limits.retry_after_s)
        # Retrieval waits on its own threads: requests stuck behind a slow knowledge base wait there (and past the
        # timeout in its queue, without a thread), never on the worker threads that key checks need.
        self.retrieval = ThreadPoolExecutor(max_workers=RETRIEVAL_THREADS, thread_name_prefix="retrieval")

    # admission ----------------------------------------------------------------------------

    def _check(self, body: ChatCompletionRequest, principal: Principal) -> None:
        lim = self.limits
        if len(body.messages) > lim.max_messages:
            raise ConfigError(f"{len(body.messages)} messages; at most {lim.max_messages} per request")
        longest = max(len(m.content) for m in body.chat_messages())
        if longest > lim.max_message_chars:
            raise ConfigError(f"a message has {longest} characters; at most {lim.max_message_chars}")
        budget = body.token_budget()
        if budget is not None and budget > lim.max_tokens:
            raise ConfigError(f"max_tokens {budget} is over the limit of {lim.max_tokens}")
        if principal.role == "customer" and body.model not in PUBLIC_ALIASES:
            raise ConfigError(
                f"customers may use {', '.join(PUBLIC_ALIASES)}, not {body.model!r}",
                hint="use model=helpline-support",
            )

    async def _admit(self, body: ChatCompletionRequest, principal: Principal) -> Turn:
        """Validate, rate-limit, take a concurrency slot, then route (in a worker thread), retrieve and fit the
        prompt to the model's context (on a retrieval thread, within ``limits.retrieval_timeout_s``). Releases
        the slot on failure."""
        self._check(body, principal)
        try:
            self.rate.check(str(principal.key.id))
        except HelplineError:
            self.metrics.rejected.labels("rate_limit").inc()
            raise
        try:
            slot = self.gate.acquire()
        except HelplineError:
            self.metrics.rejected.labels("overload").inc()
            raise
        conversation_id = body.conversation_id or uuid.uuid4().hex
        messages = body.chat_messages()
        max_tokens = body.token_budget() or self.pipeline.max_tokens
        try:
            # Routing may load a model (not bounded by the retrieval timeout); then retrieval on its own threads.
            route = await anyio.to_thread.run_sync(
                lambda: self.router.resolve(body.model, conversation_id=conversation_id)
            )
            prepared = await self._retrieve(lambda: self._prepare(route, messages, principal, max_tokens))
        except BaseException:
            self.gate.release(slot)
            raise
        self.metrics.retrieval.observe(prepared.retrieval_ms / 1000)
        self.metrics.in_flight.inc()
        return Turn(
            id=completion_id(),
            conversation_id=conversation_id,
            principal=principal,
            route=route,
            messages=messages,
            prepared=prepared,
            max_tokens=max_tokens,
            temperature=body.temperature if body.temperature is not None else self.pipeline.temperature,
            started=time.perf_counter(),
            slot=slot,
        )

    async def _retrieve(self, prepare: Callable[[], T]) -> T:
        """``prepare`` on a retrieval thread, for at most ``limits.retrieval_timeout_s``: then the client gets 503
        with Retry-After, a request still queued is dropped, and one running finishes unheard."""
        future = self.retrieval.submit(prepare)
        with anyio.move_on_after(self.limits.retrieval_timeout_s):
            return await asyncio.wrap_future(future)
        future.cancel()
        self.metrics.rejected.labels("retrieval_timeout").inc()
        raise RetrievalTimeout(self.limits.retrieval_timeout_s, self.limits.retry_after_s)

    def _prepare(self, route: Route, messages: list[ChatMessage], principal: Principal, max_tokens: int) -> Prepared:
        """Retrieve, then measure the whole prompt against the model's context (its engine's
        ``max_model_len``, else ``limits.context_tokens``): the oldest history turns are dropped to fit,
        and a question whose passages alone do not fit is a 413 (ContextTooLong)."""
        prepared = self.pipeline.prepare(messages, role=principal.retrieval_role)
        generator = route.generator
        context = context_length(generator) or self.limits.context_tokens
        # The estimate errs high, so a prompt it passes fits; only one it does not is counted by the engine.
        if prepared.generates and estimate_tokens(prepared.messages) + max_tokens > context:
            prepared.messages = fit_to_context(
                prepared.messages,
                context_tokens=context,
                answer_tokens=max_tokens,
                count=lambda prompt: count_prompt_tokens(generator, prompt),
            )
        return prepared

    async def _finish(self, turn: Turn, served: Served, *, status: str, tokens: int = 0) -> None:
        """Release the slot, count the turn's metrics and log it without personal data; once per turn,
        whichever of a stream's own end and its closing comes first. The log row is written in a worker
        thread, shielded from cancellation (a client that went away is logged too); a write that fails
        (the database busy past its timeout) is reported and does not fail the answer."""
        if turn.finished:
            return
        turn.finished = True
        self.gate.release(turn.slot)
        self.metrics.in_flight.dec()
        seconds = time.perf_counter() - turn.started + turn.prepared.retrieval_ms / 1000
        name = turn.route.record.name
        self.metrics.latency.labels(name).observe(seconds)
        self.metrics.tokens.labels(name).inc(tokens)
        if served.abstained:
            self.metrics.abstentions.inc()
        if status == "ok":
            self.metrics.outcomes.labels(served.outcome).inc()
        if status == "error":
            self.metrics.engine_errors.inc()
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(lambda: self._record(turn, served, status=status, seconds=seconds))
            except STORE_ERRORS as e:
                log.error("chat %s was served but not logged: %s", turn.id, e)
        question = turn.messages[-1].content[:200]
        log.info(
            "chat %s conv=%s model=%s status=%s outcome=%s %.0f ms q=%r",
            turn.id, turn.conversation_id, name, status, served.outcome, seconds * 1000, scrub(question)[0],
        )  # fmt: skip

    def _record(self, turn: Turn, served: Served, *, status: str, seconds: float) -> None:
        """The turn's log row. A draft that was not served (``served.draft``: unsupported, off the point, or
        declined) is kept beside what was, so a reviewer sees what the assistant tried to say and why it was
        stopped (``served.verdict``). ``origins`` tells the gateway's own earlier answers from assistant
        turns the client wrote; ``internal`` marks a staff answer generated from internal passages (both
        decide what the turn may teach a model, see ``conversations.py``)."""
        key_id, verdict = turn.principal.key.id, served.verdict
        ours = self.store.answers_in(turn.conversation_id, key_id=key_id)
        origins = [
            "gateway" if m.role == "assistant" and m.content.strip() in ours else "client" for m in turn.messages
        ]
        internal = turn.principal.role != "customer" and any(
            p.chunk.access == "internal" for p in turn.prepared.passages
        )
        self.store.record_turn(
            response_id=turn.id,
            conversation_id=turn.conversation_id,
            at=time.time(),
            key_id=key_id,
            role=turn.principal.role,
            model=turn.route.requested,
            served_model=getattr(turn.route.generator, "name", turn.route.record.name),
            adapter=turn.route.adapter,
            messages=[m.model_dump() for m in turn.messages],
            passages=[c.model_dump() for c in citations(turn.prepared.passages, with_text=True)],
            answer=served.text,
            abstained=int(served.abstained),
            latency_ms=seconds * 1000,
            status=status,
            withdrawn=served.draft,
            verification=None if verdict is None else {**asdict(verdict), "outcome": served.outcome},
            origins=origins,
            internal=int(internal),
        )

    # non-streaming ------------------------------------------------------------------------

    async def complete(self, body: ChatCompletionRequest, principal: Principal) -> ChatCompletionResponse:
        turn = await self._admit(body, principal)
        served, usage, status, finish_reason = Served("handoff", turn.prepared.abstention), Usage(), "error", "stop"
        try:
            draft, cut = "", False
            if turn.prepared.generates:
                async with asyncio.timeout(self.limits.upstream_timeout_s):  # no task of its own (see streaming.py)
                    generation = await agenerate(
                        turn.route.generator, turn.prepared.messages,
                        max_tokens=turn.max_tokens, temperature=turn.temperature,
                    )  # fmt: skip
                draft, cut = generation.text, generation.finish_reason == "length"
                finish_reason = generation.finish_reason
                usage = Usage(
                    prompt_tokens=generation.prompt_tokens,
                    completion_tokens=generation.completion_tokens,
                    total_tokens=generation.prompt_tokens + generation.completion_tokens,
                )
            served = await self._decide(turn, draft, cut=cut)
            status = "ok"
        except TimeoutError as e:
            raise GatewayTimeout(
                f"the engine did not answer within {self.limits.upstream_timeout_s:.0f} s", hint="retry later"
            ) from e
        finally:
            await self._finish(turn, served, status=status, tokens=usage.completion_tokens)
        return ChatCompletionResponse(
            id=turn.id,
            model=body.model,
            choices=[
                Choice(
                    message=ChoiceMessage(content=served.text),
                    finish_reason=finish_reason if served.outcome == "answered" else "stop",
                )
            ],
            usage=usage,
            citations=served.citations,
            abstained=served.abstained,
            outcome=served.outcome,
            conversation_id=turn.conversation_id,
        )

    # streaming ----------------------------------------------------------------------------

    async def stream(self, body: ChatCompletionRequest, principal: Principal) -> EventStream:
        """Admit first (so limits answer with a status code), then return the SSE event stream; closing
        it, however the response ends, gives the turn's slot back."""
        turn = await self._admit(body, principal)
        cancelled = Served("handoff", turn.prepared.abstention)
        return EventStream(
            self._events(turn, body.model), on_close=lambda: self._finish(turn, cancelled, status="cancelled")
        )

    async def _events(self, turn: Turn, model: str) -> AsyncIterator[str]:
        """Content deltas of what is served, then a final event with the outcome and citations, then
        ``data: [DONE]``. Nothing reaches the customer before the answer is decided: the engine's draft
        is read to its end (or until it starts repeating itself, which ends generation early), decided
        as a whole answer is, and only then streamed. An engine failure becomes an ``error`` event (its
        details logged under the turn's id); a client that goes away cancels the generation."""
        created = int(time.time())

        def event(delta: dict, finish: str | None = None, **extra: object) -> str:
            chunk = {
                "id": turn.id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(chunk)}\n\n"

        served, status, tokens = Served("handoff", turn.prepared.abstention), "cancelled", 0
        try:
            yield event({"role": "assistant", "content": ""})
            draft, finish = "", "stop"
            if turn.prepared.generates:
                parts: list[str] = []
                async for delta in self._deltas(turn):
                    if isinstance(delta, StreamEnd):
                        finish = delta.reason
                        continue
                    parts.append(delta)
                    tokens += 1
                    if delta.endswith(("\n", ".", "!", "?")) and repeats("".join(parts)):
                        break  # the rest would be cut from what is served anyway
                draft = "".join(parts)
            served = await self._decide(turn, draft, cut=finish == "length")
            for piece in pieces(served.text):
                yield event({"content": piece})
            yield event(
                {}, finish if served.outcome == "answered" else "stop",
                citations=[c.model_dump() for c in served.citations], abstained=served.abstained,
                outcome=served.outcome, conversation_id=turn.conversation_id,
                verification=None if served.verdict is None else asdict(served.verdict),
            )  # fmt: skip
            status = "ok"
        except (HelplineError, TimeoutError) as e:
            status = "error"
            failure = e if isinstance(e, HelplineError) else GatewayTimeout("the engine did not answer in time")
            message = client_message(failure, turn.id, staff=turn.principal.role != "customer")
            yield f"data: {json.dumps(error_body(failure.http_status, message, request_id=turn.id))}\n\n"
        finally:
            await self._finish(turn, served, status=status, tokens=tokens)
        yield "data: [DONE]\n\n"

    async def _decide(self, turn: Turn, draft: str, *, cut: bool) -> Served:
        """The pipeline's decision, in a worker thread: a detector's or the reader's model must not block
        the event loop."""
        return await anyio.to_thread.run_sync(lambda: self.pipeline.decide(turn.prepared, draft, cut=cut))

    def _deltas(self, turn: Turn) -> AsyncIterator[str]:
        """The engine's deltas for ``turn``, each awaited with the upstream timeout; TTFT is observed at the first."""
        ttft = self.metrics.ttft.labels(turn.route.record.name)
        return engine_deltas(
            turn.route.generator, turn.prepared.messages, max_tokens=turn.max_tokens, temperature=turn.temperature,
            timeout_s=self.limits.upstream_timeout_s, on_first=lambda: ttft.observe(time.perf_counter() - turn.started),
        )  # fmt: skip
