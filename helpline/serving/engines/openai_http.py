"""An OpenAI-compatible HTTP engine: the local `vllm serve`, or any remote endpoint (a teacher)."""

from __future__ import annotations

from collections.abc import Iterator

from helpline.platform.errors import EngineError
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage
from helpline.serving.engines.protocol import Generation


class OpenAIGenerator:
    """Chat completions against ``base_url`` (e.g. ``http://127.0.0.1:8001/v1``) for ``model``."""

    def __init__(self, base_url: str, model: str, *, api_key: str = "unused", timeout_s: float = 120.0) -> None:
        openai = require("openai", "serve")
        self.name = model
        self.base_url = base_url
        self._openai = openai
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    def generate(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Generation:
        try:
            resp = self._client.chat.completions.create(
                model=self.name,
                messages=[m.model_dump() for m in messages],
                max_tokens=max_tokens,
                temperature=temperature,
            )
        except self._openai.OpenAIError as e:
            raise EngineError(
                f"the engine at {self.base_url} failed for model {self.name!r}: {e}",
                hint="check that the engine is running (`helpline run`) and the model name is served",
            ) from e
        usage = resp.usage
        return Generation(
            text=(resp.choices[0].message.content or "").strip(),
            model=self.name,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def stream(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        try:
            events = self._client.chat.completions.create(
                model=self.name,
                messages=[m.model_dump() for m in messages],
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
            )
            for event in events:
                if event.choices and event.choices[0].delta.content:
                    yield event.choices[0].delta.content
        except self._openai.OpenAIError as e:
            raise EngineError(f"the engine at {self.base_url} failed mid-answer: {e}") from e
