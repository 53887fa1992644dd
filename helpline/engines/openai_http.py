"""An OpenAI-compatible HTTP engine: the local `vllm serve`, or any remote endpoint (a teacher)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from helpline.engines.protocol import ContextTooLong, Generation, StreamEnd, estimate_tokens
from helpline.platform.errors import EngineError
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage


class OpenAIGenerator:
    """Chat completions against ``base_url`` (e.g. ``http://127.0.0.1:8001/v1``) for ``model``.

    ``async_client`` lets many generators (one per served model name) share one connection pool;
    ``max_model_len`` is the served context (vLLM's ``--max-model-len``), which the gateway measures
    prompts against before it sends them (:meth:`count_tokens`; ``http_client`` carries that call).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "unused",
        timeout_s: float = 120.0,
        async_client: Any = None,
        stop: list[str] | None = None,
        max_model_len: int | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        openai = require("openai", "serve")
        self.name = model
        self.max_model_len = max_model_len
        self.stop = list(stop or [])  # stop sequences sent with every request (none by default)
        self.base_url = base_url
        self._openai = openai
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self._async = async_client or openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0
        )
        self._http = http_client or httpx.Client(timeout=5.0)

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        """Prompt tokens of ``messages`` as the engine counts them (vLLM's ``POST /tokenize``, with the
        model's chat template); the conservative estimate where the endpoint has no such route."""
        root = self.base_url.rstrip("/").removesuffix("/v1")
        body = {"model": self.name, "messages": [m.model_dump() for m in messages], "add_generation_prompt": True}
        try:
            resp = self._http.post(f"{root}/tokenize", json=body)
            if resp.status_code == 200:
                return int(resp.json()["count"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            pass
        return estimate_tokens(messages)

    def _request(self, messages: list[ChatMessage], max_tokens: int, temperature: float) -> dict:
        body = {
            "model": self.name,
            "messages": [m.model_dump() for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if self.stop:
            body["stop"] = self.stop
        return body

    def _error(self, e: Exception, when: str) -> EngineError:
        if isinstance(e, self._openai.BadRequestError) and "context length" in str(e).lower():
            # vLLM refuses a prompt that, with max_tokens, is over --max-model-len: the client's request is too
            # long, not the engine down. The message is the client's to read, so it names no address.
            limit = f" of {self.max_model_len} tokens" if self.max_model_len else ""
            return ContextTooLong(
                f"the conversation and the answer it asks for do not fit the model's context{limit}",
                hint="send fewer or shorter messages, or a smaller max_tokens",
            )
        return EngineError(
            f"the engine at {self.base_url} failed {when} for model {self.name!r}: {e}",
            hint="check that the engine is running (`helpline run`) and the model name is served",
        )

    def _generation(self, resp: Any) -> Generation:
        usage = resp.usage
        return Generation(
            text=(resp.choices[0].message.content or "").strip(),
            model=self.name,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=resp.choices[0].finish_reason or "stop",
        )

    def generate(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Generation:
        try:
            resp = self._client.chat.completions.create(**self._request(messages, max_tokens, temperature))
        except self._openai.OpenAIError as e:
            raise self._error(e, "to answer") from e
        return self._generation(resp)

    def stream(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        try:
            events = self._client.chat.completions.create(
                **self._request(messages, max_tokens, temperature), stream=True
            )
            finish = None
            for event in events:
                if event.choices and event.choices[0].delta.content:
                    yield event.choices[0].delta.content
                finish = (event.choices[0].finish_reason if event.choices else None) or finish
            if finish:
                yield StreamEnd(finish)
        except self._openai.OpenAIError as e:
            raise self._error(e, "mid-answer") from e

    async def agenerate(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Generation:
        try:
            resp = await self._async.chat.completions.create(**self._request(messages, max_tokens, temperature))
        except self._openai.OpenAIError as e:
            raise self._error(e, "to answer") from e
        return self._generation(resp)

    async def astream(
        self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0
    ) -> AsyncIterator[str]:
        """Stream deltas; closing this iterator (client gone) closes the upstream request, so vLLM
        aborts the generation instead of finishing it for nobody."""
        try:
            events = await self._async.chat.completions.create(
                **self._request(messages, max_tokens, temperature), stream=True
            )
        except self._openai.OpenAIError as e:
            raise self._error(e, "to start") from e
        finish = None
        try:
            async for event in events:
                if event.choices and event.choices[0].delta.content:
                    yield event.choices[0].delta.content
                finish = (event.choices[0].finish_reason if event.choices else None) or finish
            if finish:
                yield StreamEnd(finish)
        except (self._openai.OpenAIError, httpx.HTTPError) as e:  # the engine died mid-stream
            raise self._error(e, "mid-answer") from e
        finally:
            await events.close()
