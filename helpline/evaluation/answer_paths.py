"""The entry points `eval answers` asks through: the pipeline (`helpline ask`), and the gateway app,
whole or streamed. Each returns a function from a question to what it served."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpline.answering.rag import RAGPipeline
from helpline.evaluation.answers import AnswerCase, ServedAnswer, Via
from helpline.evaluation.load import serve_app
from helpline.platform.lazy_imports import require
from helpline.platform.registry import Registry
from helpline.serving.gateway.app import create_app
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.routing import ModelRouter

Answerer = Callable[[AnswerCase], ServedAnswer]


def through_pipeline(pipeline: RAGPipeline) -> Answerer:
    """What `helpline ask` serves: prepare, generate, decide."""

    def answer(case: AnswerCase) -> ServedAnswer:
        start = time.perf_counter()
        served, _ = pipeline.serve(pipeline.prepare(case.messages(), role=case.role))
        return ServedAnswer(
            text=served.text,
            outcome=served.outcome,
            citations=[c.doc_id for c in served.citations],
            latency_ms=(time.perf_counter() - start) * 1000,
            claim=served.claim,
            reason=served.reason,
            draft=served.draft,
        )

    return answer


@dataclass
class _OneGenerator:
    """A router backend that answers every model with the pipeline's generator (the model under test)."""

    generator: Any

    def generator_for(self, record: Any) -> Any:
        return self.generator


def gateway_app(pipeline: RAGPipeline, registry: Registry, folder: Path) -> tuple[Any, dict[str, str]]:
    """The gateway app around ``pipeline`` (its keys and conversation store in ``folder``) and a key per
    role; limits high enough that a measurement is never throttled."""

    folder.mkdir(parents=True, exist_ok=True)
    store = GatewayStore(folder / "gateway.sqlite")
    keys = {role: store.create_key(role, name=f"eval-{role}")[0] for role in ("customer", "staff")}
    limits = GatewayLimits(requests_per_minute=100_000, burst=100_000, upstream_timeout_s=600)
    router = ModelRouter(registry, _OneGenerator(pipeline.generator))
    return create_app(pipeline=pipeline, router=router, store=store, limits=limits), keys


@contextmanager
def served_gateway(pipeline: RAGPipeline, registry: Registry, folder: Path) -> Iterator[tuple[str, str]]:
    """The gateway app around ``pipeline`` served by uvicorn on a loopback port: (base URL, customer key)."""
    app, keys = gateway_app(pipeline, registry, folder)
    server, thread, url = serve_app(app)
    try:
        yield f"{url}/v1", keys["customer"]
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def through_gateway(pipeline: RAGPipeline, registry: Registry, *, stream: bool) -> Iterator[Answerer]:
    """`POST /v1/chat/completions` on the gateway app built around ``pipeline`` (in-process, with its
    own keys and conversation store in a temporary folder); ``stream`` joins the SSE events."""
    TestClient = require("fastapi.testclient", "serve").TestClient

    with tempfile.TemporaryDirectory(prefix="helpline-answers-") as tmp:
        app, keys = gateway_app(pipeline, registry, Path(tmp))
        with TestClient(app) as client:

            def answer(case: AnswerCase) -> ServedAnswer:
                body = {
                    "model": "helpline-support",
                    "messages": [m.model_dump() for m in case.messages()],
                    "stream": stream,
                }
                headers = {"Authorization": f"Bearer {keys[case.role]}"}
                start = time.perf_counter()
                if stream:
                    return _streamed(client, body, headers, start)
                resp = client.post("/v1/chat/completions", json=body, headers=headers)
                if resp.status_code != 200:
                    raise RuntimeError(f"the gateway answered {resp.status_code}: {resp.text[:300]}")
                data = resp.json()
                text = data["choices"][0]["message"]["content"]
                return ServedAnswer(
                    text=text,
                    outcome=data["outcome"],
                    citations=[c["doc_id"] for c in data["citations"]],
                    latency_ms=(time.perf_counter() - start) * 1000,
                    claim=claim_of(text, data["outcome"]),
                )

            yield answer


def _streamed(client: Any, body: dict, headers: dict, start: float) -> ServedAnswer:
    parts: list[str] = []
    final: dict[str, Any] = {}
    first: float | None = None
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"the gateway answered {resp.status_code}: {resp.read()[:300]!r}")
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"the stream failed: {event['error']}")
            delta = event["choices"][0]["delta"].get("content")
            if delta:
                first = first or time.perf_counter()
                parts.append(delta)
            if "outcome" in event:
                final = event
    text = "".join(parts)
    outcome = final.get("outcome", "answered")
    return ServedAnswer(
        text=text,
        outcome=outcome,
        citations=[c["doc_id"] for c in final.get("citations", [])],
        latency_ms=(time.perf_counter() - start) * 1000,
        claim=claim_of(text, outcome),
        reason=f"first token after {1000 * ((first or time.perf_counter()) - start):.0f} ms",
    )


def claim_of(text: str, outcome: str) -> str:
    """The served text without the fallback's framing line."""
    if outcome == "handoff":
        return ""
    if outcome == "fallback" and "\n" in text:
        return text.split("\n", 1)[1]
    return text


@contextmanager
def answerer(via: Via, pipeline: RAGPipeline, registry: Registry) -> Iterator[Answerer]:
    """The entry point ``via`` names."""
    if via == "pipeline":
        yield through_pipeline(pipeline)
        return
    with through_gateway(pipeline, registry, stream=via == "stream") as answer:
        yield answer
