"""`helpline bench scale`'s instant engine: the stand-in for vLLM that makes a measurement gateway-bound must speak
what the gateway's engine client speaks (model list, token counts, streamed and whole chat completions)."""

from __future__ import annotations

import asyncio

import pytest

from helpline.platform.schemas import ChatMessage

pytest.importorskip("uvicorn")


def test_the_instant_engine_serves_the_gateways_engine_client() -> None:
    from helpline.bench.scale import INSTANT_ANSWER, instant_engine
    from helpline.engines.openai_http import OpenAIGenerator
    from helpline.engines.vllm_external import ExternalVLLM
    from helpline.evaluation.load import serve_app
    from helpline.platform.settings import VLLMSettings

    server, _, url = serve_app(instant_engine("smollm2"))
    try:
        engine = ExternalVLLM(served_name="smollm2", settings=VLLMSettings(url=url), workspace_root=".")
        assert engine.served_models() == ["smollm2"]  # a gateway pointed at it starts
        gen = OpenAIGenerator(f"{url}/v1", "smollm2")
        messages = [ChatMessage(role="user", content="How do I return an item?")]
        assert gen.count_tokens(messages) > 0

        async def stream() -> list[str]:
            return [d async for d in gen.astream(messages, max_tokens=16, temperature=0.0) if isinstance(d, str) and d]

        assert asyncio.run(stream()) == INSTANT_ANSWER
        assert gen.generate(messages, max_tokens=16).text == "".join(INSTANT_ANSWER)
    finally:
        server.should_exit = True
