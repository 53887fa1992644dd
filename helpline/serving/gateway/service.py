"""The chat service: limits, routing, retrieval, generation, verification, logging.

The router stays thin; everything a chat request goes through is here, in the order of the
request path in DESIGN.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

import anyio.to_thread

from helpline.platform.errors import ConfigError, EngineError, HelplineError
from helpline.platform.schemas import ChatMessage
from helpline.serving.engines.protocol import StreamEnd, agenerate, astream
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
from helpline.serving.rag import Check, Prepared, RAGPipeline, Verdict, citations
from helpline.serving.redact import redact
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

    def _finish(
        self,
        turn: Turn,
        answer: str,
        *,
        abstained: bool,
        status: str,
        tokens: int = 0,
        verdict: Verdict | None = None,
        withdrawn: str | None = None,
    ) -> None:
        """Release the slot, record the turn and its metrics, log it without personal data. ``withdrawn``
        is the draft the hallucination check took back (``answer`` is then the handoff), kept so a
        reviewer sees what the assistant tried to say and why it was stopped (``verdict``)."""
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
            withdrawn=withdrawn,
            verification=None if verdict is None else asdict(verdict),
        )
        question = turn.messages[-1].content[:200]
        log.info(
            "chat %s conv=%s model=%s status=%s abstained=%s %.0f ms q=%r",
            turn.id, turn.conversation_id, name, status, abstained, seconds * 1000, redact(question),
        )  # fmt: skip

    # non-streaming ------------------------------------------------------------------------

    async def complete(self, body: ChatCompletionRequest, principal: Principal) -> ChatCompletionResponse:
        turn = await self._admit(body, principal)
        text, usage, status, abstained = turn.prepared.abstention, Usage(), "error", turn.prepared.abstained
        finish_reason, verdict, withdrawn = "stop", None, None
        try:
            if not abstained:
                generation = await asyncio.wait_for(
                    agenerate(
                        turn.route.generator, turn.prepared.messages,
                        max_tokens=turn.max_tokens, temperature=turn.temperature,
                    ),
                    timeout=self.limits.upstream_timeout_s,
                )  # fmt: skip
                check = await self._check_answer(generation.text, turn)
                verdict = check.verdict
                if check.handed_over:  # it said it does not know, or the verifier rejected it
                    text, abstained = self.pipeline.abstention_text(), True
                    withdrawn = generation.text if check.withdrawn else None
                else:
                    text, finish_reason = generation.text, generation.finish_reason
                usage = Usage(
                    prompt_tokens=generation.prompt_tokens,
                    completion_tokens=generation.completion_tokens,
                    total_tokens=generation.prompt_tokens + generation.completion_tokens,
                )
            status = "ok"
        except TimeoutError as e:
            raise GatewayTimeout(
                f"the engine did not answer within {self.limits.upstream_timeout_s:.0f} s", hint="retry later"
            ) from e
        finally:
            self._finish(
                turn, text, abstained=abstained, status=status, tokens=usage.completion_tokens,
                verdict=verdict, withdrawn=withdrawn,
            )  # fmt: skip
        return ChatCompletionResponse(
            id=turn.id,
            model=body.model,
            choices=[Choice(message=ChoiceMessage(content=text), finish_reason=finish_reason)],
            usage=usage,
            citations=[] if abstained else citations(turn.prepared.passages, answer=text),
            abstained=abstained,
            conversation_id=turn.conversation_id,
        )

    # streaming ----------------------------------------------------------------------------

    async def stream(self, body: ChatCompletionRequest, principal: Principal) -> AsyncIterator[str]:
        """Admit first (so limits answer with a status code), then return the SSE event stream."""
        turn = await self._admit(body, principal)
        return self._events(turn, body.model)

    async def _events(self, turn: Turn, model: str) -> AsyncIterator[str]:
        """Content deltas, then a final event with citations, then ``data: [DONE]``. An engine failure
        mid-answer becomes an ``error`` event; a client that goes away cancels the generation."""
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

        parts: list[str] = []
        finish = "stop"  # unless the engine says otherwise (StreamEnd)
        status, abstained = "cancelled", turn.prepared.abstained
        verdict, withdrawn, declined = None, False, False
        try:
            yield event({"role": "assistant", "content": ""})
            if abstained:
                parts.append(turn.prepared.abstention)
                yield event({"content": turn.prepared.abstention})
            else:
                async for delta in self._deltas(turn):
                    if isinstance(delta, StreamEnd):
                        finish = delta.reason
                        continue
                    parts.append(delta)
                    yield event({"content": delta})
            answer = "".join(parts)
            check = Check(await self._verify(answer, turn)) if abstained else await self._check_answer(answer, turn)
            # Already sent, so it cannot be replaced as a whole answer is: the final event withdraws it
            # (no sources, the abstention to show instead) and the turn is flagged for review. A model
            # that said it does not know gets the abstention (with the handoff's contacts) to show too.
            verdict, withdrawn, declined = check.verdict, check.withdrawn, check.declined
            abstained = abstained or check.handed_over
            cited = [] if abstained else [c.model_dump() for c in citations(turn.prepared.passages, answer=answer)]
            extra: dict[str, object] = {"abstention": self.pipeline.abstention_text()} if withdrawn or declined else {}
            if withdrawn:
                extra["withdrawn"] = True
            yield event(
                {}, finish, citations=cited, abstained=abstained, conversation_id=turn.conversation_id,
                verification=None if verdict is None else asdict(verdict),
                **extra,
            )  # fmt: skip
            status = "ok"
        except (HelplineError, TimeoutError) as e:
            status = "error"
            code = e.http_status if isinstance(e, HelplineError) else 504
            yield f"data: {json.dumps(error_body(code, str(e) or 'the engine did not answer in time'))}\n\n"
        finally:
            sent = "".join(parts)
            shown = self.pipeline.abstention_text() if withdrawn or declined else sent  # what the customer keeps
            self._finish(
                turn, shown, abstained=abstained, status=status, tokens=len(parts), verdict=verdict,
                withdrawn=sent if withdrawn else None,
            )  # fmt: skip
        yield "data: [DONE]\n\n"

    async def _verify(self, text: str, turn: Turn) -> Verdict:
        """The pipeline's verdict, computed in a worker thread: a detector's model must not block the loop."""
        return await anyio.to_thread.run_sync(self.pipeline.verify, text, turn.prepared.passages)

    async def _check_answer(self, text: str, turn: Turn) -> Check:
        """The pipeline's :meth:`~RAGPipeline.check` of a generated answer, in a worker thread as above."""
        return await anyio.to_thread.run_sync(self.pipeline.check, text, turn.prepared.passages)

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
