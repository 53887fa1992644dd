"""The chat service: limits, routing, retrieval, generation, verification, logging.

The router stays thin; everything a chat request goes through is here, in the order of the
request path in DESIGN.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

import anyio.to_thread

from helpline.answering.decision import Served, repeats
from helpline.answering.rag import Prepared, RAGPipeline, citations
from helpline.engines.protocol import StreamEnd, agenerate, astream
from helpline.platform.errors import ConfigError, EngineError, HelplineError
from helpline.platform.pii import scrub
from helpline.platform.schemas import ChatMessage
from helpline.serving.gateway.auth import Principal
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.errors import error_body
from helpline.serving.gateway.limits import ConcurrencyGate, RateLimiter
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
from helpline.serving.routing import PUBLIC_ALIASES, ModelRouter, Route

log = logging.getLogger("helpline.gateway")


class GatewayTimeout(HelplineError):
    http_status = 504


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
    ) -> None:
        self.pipeline = pipeline
        self.router = router
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self.rate = RateLimiter(limits.requests_per_minute, limits.burst)
        self.gate = ConcurrencyGate(limits.max_concurrency, limits.retry_after_s)

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
        """Validate, rate-limit, take a concurrency slot, route and retrieve. Releases the slot on failure."""
        self._check(body, principal)
        try:
            self.rate.check(str(principal.key.id))
        except HelplineError:
            self.metrics.rejected.labels("rate_limit").inc()
            raise
        try:
            self.gate.acquire()
        except HelplineError:
            self.metrics.rejected.labels("overload").inc()
            raise
        try:
            conversation_id = body.conversation_id or uuid.uuid4().hex
            route = self.router.resolve(body.model, conversation_id=conversation_id)
            messages = body.chat_messages()
            prepared = await anyio.to_thread.run_sync(
                lambda: self.pipeline.prepare(messages, role=principal.retrieval_role)
            )
        except BaseException:
            self.gate.release()
            raise
        self.metrics.retrieval.observe(prepared.retrieval_ms / 1000)
        self.metrics.in_flight.inc()
        p = self.pipeline
        return Turn(
            id=completion_id(),
            conversation_id=conversation_id,
            principal=principal,
            route=route,
            messages=messages,
            prepared=prepared,
            max_tokens=body.token_budget() or p.max_tokens,
            temperature=body.temperature if body.temperature is not None else p.temperature,
            started=time.perf_counter(),
        )

    def _finish(self, turn: Turn, served: Served, *, status: str, tokens: int = 0) -> None:
        """Release the slot, record the turn and its metrics, log it without personal data. A draft that
        was not served (``served.draft``: unsupported, off the point, or declined) is kept beside what was,
        so a reviewer sees what the assistant tried to say and why it was stopped (``served.verdict``)."""
        answer, abstained, verdict = served.text, served.abstained, served.verdict
        self.gate.release()
        self.metrics.in_flight.dec()
        seconds = time.perf_counter() - turn.started + turn.prepared.retrieval_ms / 1000
        name = turn.route.record.name
        self.metrics.latency.labels(name).observe(seconds)
        self.metrics.tokens.labels(name).inc(tokens)
        if abstained:
            self.metrics.abstentions.inc()
        if status == "error":
            self.metrics.engine_errors.inc()
        self.store.record_turn(
            response_id=turn.id,
            conversation_id=turn.conversation_id,
            at=time.time(),
            key_id=turn.principal.key.id,
            role=turn.principal.role,
            model=turn.route.requested,
            served_model=getattr(turn.route.generator, "name", name),
            adapter=turn.route.adapter,
            messages=[m.model_dump() for m in turn.messages],
            passages=[c.model_dump() for c in citations(turn.prepared.passages, with_text=True)],
            answer=answer,
            abstained=int(abstained),
            latency_ms=seconds * 1000,
            status=status,
            withdrawn=served.draft,
            verification=None if verdict is None else {**asdict(verdict), "outcome": served.outcome},
        )
        question = turn.messages[-1].content[:200]
        log.info(
            "chat %s conv=%s model=%s status=%s outcome=%s %.0f ms q=%r",
            turn.id, turn.conversation_id, name, status, served.outcome, seconds * 1000, scrub(question)[0],
        )  # fmt: skip

    # non-streaming ------------------------------------------------------------------------

    async def complete(self, body: ChatCompletionRequest, principal: Principal) -> ChatCompletionResponse:
        turn = await self._admit(body, principal)
        served, usage, status, finish_reason = Served("handoff", turn.prepared.abstention), Usage(), "error", "stop"
        try:
            draft, cut = "", False
            if not turn.prepared.abstained:
                generation = await asyncio.wait_for(
                    agenerate(
                        turn.route.generator, turn.prepared.messages,
                        max_tokens=turn.max_tokens, temperature=turn.temperature,
                    ),
                    timeout=self.limits.upstream_timeout_s,
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
            self._finish(turn, served, status=status, tokens=usage.completion_tokens)
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

    async def stream(self, body: ChatCompletionRequest, principal: Principal) -> AsyncIterator[str]:
        """Admit first (so limits answer with a status code), then return the SSE event stream."""
        turn = await self._admit(body, principal)
        return self._events(turn, body.model)

    async def _events(self, turn: Turn, model: str) -> AsyncIterator[str]:
        """Content deltas of what is served, then a final event with the outcome and citations, then
        ``data: [DONE]``. Nothing reaches the customer before the answer is decided: the engine's draft
        is read to its end (or until it starts repeating itself, which ends generation early), decided
        as a whole answer is, and only then streamed. An engine failure becomes an ``error`` event; a
        client that goes away cancels the generation."""
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
            if not turn.prepared.abstained:
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
            for piece in _pieces(served.text):
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
            code = e.http_status if isinstance(e, HelplineError) else 504
            yield f"data: {json.dumps(error_body(code, str(e) or 'the engine did not answer in time'))}\n\n"
        finally:
            self._finish(turn, served, status=status, tokens=tokens)
        yield "data: [DONE]\n\n"

    async def _decide(self, turn: Turn, draft: str, *, cut: bool) -> Served:
        """The pipeline's decision, in a worker thread: a detector's or the reader's model must not block
        the event loop."""
        return await anyio.to_thread.run_sync(lambda: self.pipeline.decide(turn.prepared, draft, cut=cut))

    async def _deltas(self, turn: Turn) -> AsyncIterator[str]:
        """The engine's deltas, each awaited with the upstream timeout; TTFT is observed here."""
        stream = astream(
            turn.route.generator, turn.prepared.messages, max_tokens=turn.max_tokens, temperature=turn.temperature
        )
        first = True
        try:
            while True:
                try:
                    delta = await asyncio.wait_for(anext(stream), timeout=self.limits.upstream_timeout_s)
                except StopAsyncIteration:
                    return
                if first:
                    self.metrics.ttft.labels(turn.route.record.name).observe(time.perf_counter() - turn.started)
                    first = False
                yield delta
        except EngineError:
            raise
        except Exception as e:
            if isinstance(e, (HelplineError, TimeoutError)):
                raise
            raise EngineError(f"the engine failed mid-answer: {type(e).__name__}: {e}") from e
        finally:
            await stream.aclose()


def _pieces(text: str, size: int = 24) -> list[str]:
    """The served text as stream deltas of about ``size`` characters, cut after whitespace; joined,
    they are the text exactly."""
    out: list[str] = []
    for word in re.findall(r"\s*\S+\s*", text) or [text]:
        if out and len(out[-1]) < size:
            out[-1] += word
        else:
            out.append(word)
    return [p for p in out if p]
