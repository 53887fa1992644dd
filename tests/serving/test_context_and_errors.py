"""The whole prompt is measured against the model's context before generating, and an engine's failure
never shows a client the engine's address, an adapter's name or the exception's text."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from helpline.engines.openai_http import OpenAIGenerator
from helpline.engines.protocol import estimate_tokens
from helpline.platform.errors import EngineError
from helpline.platform.schemas import ChatMessage
from helpline.testing import FakeGenerator
from helpline.testing.serving import Gateway

RETURN_Q = "How do I return an item and print the label?"
LEAK = "the engine at http://10.9.8.7:8001/v1 failed to answer for model 'fake-adapter-1a2b3c4d': Connection refused"


@dataclass
class SmallContext(FakeGenerator):
    """A fake engine that reports a small context, as vLLM's max_model_len."""

    max_model_len: int = 1500


class DownEngine(FakeGenerator):
    """An engine whose error names its address and the adapter, as OpenAIGenerator's do."""

    def generate(self, messages, *, max_tokens, temperature=0.0):
        raise EngineError(LEAK, hint="check that the engine is running (`helpline run`)")

    def stream(self, messages, *, max_tokens, temperature=0.0) -> Iterator[str]:
        raise EngineError(LEAK, hint="check that the engine is running (`helpline run`)")


def _post(gw: Gateway, messages: list[dict], role: str = "customer", **extra: object) -> httpx.Response:
    body = {"model": "helpline-support", "messages": messages, **extra}
    return gw.client.post("/v1/chat/completions", json=body, headers=gw.headers(role))


def _long_history(turns: int) -> list[dict]:
    history = []
    for i in range(turns):
        history.append({"role": "user", "content": f"Question {i}: how do I return an item? " + "parcel " * 60})
        history.append({"role": "assistant", "content": f"Answer {i}: open your orders. " + "label " * 60})
    return history


def test_the_oldest_history_is_dropped_to_fit_the_models_context(gateway: Gateway) -> None:
    engine = SmallContext(name="fake-base")
    gateway.backend.generators["fake-base"] = engine
    messages = [*_long_history(10), {"role": "user", "content": RETURN_Q}]
    resp = _post(gateway, messages)
    assert resp.status_code == 200, resp.text
    sent = engine.requests[-1]
    kept = [{"role": m.role, "content": m.content} for m in sent[1:]]
    assert sent[0].role == "system" and kept[-1] == {"role": "user", "content": RETURN_Q}
    assert 1 < len(kept) < len(messages) and kept == messages[-len(kept) :]  # the newest turns, the oldest dropped
    assert kept[0]["role"] == "user"
    assert sum(len(m.content) for m in sent) < engine.max_model_len * 4  # what it was sent fits its context


def test_a_question_that_cannot_fit_with_its_passages_is_a_413_naming_the_limit(gateway: Gateway) -> None:
    engine = SmallContext(name="fake-base", max_model_len=400)
    gateway.backend.generators["fake-base"] = engine
    for stream in (False, True):
        resp = _post(gateway, [{"role": "user", "content": (RETURN_Q + " ") * 150}], stream=stream)
        assert resp.status_code == 413, resp.text
        assert "400 tokens" in resp.json()["error"]["message"] and "Retry-After" not in resp.headers
    assert engine.requests == []
    assert gateway.client.app.state.chat_service.gate.active == 0


def test_an_engine_failure_shows_a_generic_message_with_a_request_id(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.backend.generators["fake-base"] = DownEngine(name="fake-base")
    with caplog.at_level(logging.WARNING, logger="helpline.gateway"):
        resp = _post(gateway, [{"role": "user", "content": RETURN_Q}])
    assert resp.status_code == 503
    error = resp.json()["error"]
    for secret in ("10.9.8.7", "fake-adapter", "Connection refused", "helpline run", "EngineError"):
        assert secret not in resp.text
    assert error["request_id"] and error["request_id"] in error["message"]
    assert any(error["request_id"] in r.getMessage() and "10.9.8.7" in r.getMessage() for r in caplog.records)


def test_an_engine_failure_mid_stream_shows_a_generic_message_with_a_request_id(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.backend.generators["fake-base"] = DownEngine(name="fake-base")
    with caplog.at_level(logging.WARNING, logger="helpline.gateway"):
        resp = _post(gateway, [{"role": "user", "content": RETURN_Q}], stream=True)
    events = [e[6:] for e in resp.text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "10.9.8.7" not in resp.text and "fake-adapter" not in resp.text and "refused" not in resp.text
    assert error["request_id"] in error["message"]
    assert any(error["request_id"] in r.getMessage() and "10.9.8.7" in r.getMessage() for r in caplog.records)


def test_the_unknown_model_hint_lists_no_adapter(gateway: Gateway) -> None:
    resp = _post(gateway, [{"role": "user", "content": RETURN_Q}], role="staff", model="gpt-99")
    assert resp.status_code == 404
    assert "fake-adapter" not in resp.text and "fake-base" not in resp.text


def test_vllm_refusing_an_over_long_prompt_is_a_413_without_its_address() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        message = "This model's maximum context length is 2048 tokens. However, you requested 2300 tokens."
        return httpx.Response(400, json={"error": {"message": message, "type": "BadRequestError", "code": 400}})

    client = openai.AsyncOpenAI(
        base_url="http://10.9.8.7:8001/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(refuse)),
    )
    engine = OpenAIGenerator("http://10.9.8.7:8001/v1", "fake-adapter-1a2b", async_client=client)
    with pytest.raises(EngineError) as caught:
        asyncio.run(engine.agenerate([ChatMessage(role="user", content="hi")], max_tokens=300))
    assert caught.value.http_status == 413
    assert "10.9.8.7" not in str(caught.value) and "fake-adapter" not in str(caught.value)


def test_the_vllm_engine_counts_a_prompt_with_its_tokenize_route_and_estimates_without_one() -> None:
    asked: list[dict] = []

    def tokenize(request: httpx.Request) -> httpx.Response:
        asked.append({"path": request.url.path, **json.loads(request.content)})
        return httpx.Response(200, json={"count": 42, "max_model_len": 2048, "tokens": []})

    messages = [ChatMessage(role="user", content="How do I return an item?")]
    engine = OpenAIGenerator(
        "http://10.9.8.7:8001/v1", "fake-base", http_client=httpx.Client(transport=httpx.MockTransport(tokenize))
    )
    assert engine.count_tokens(messages) == 42
    assert asked[0]["path"] == "/tokenize" and asked[0]["model"] == "fake-base" and asked[0]["add_generation_prompt"]
    remote = OpenAIGenerator(
        "http://10.9.8.7:8001/v1",
        "teacher",
        http_client=httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(404))),
    )
    assert remote.count_tokens(messages) == estimate_tokens(messages)
