"""The UI's gateway client on its own: SSE parsing, readable errors, and what the UI may import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpline.platform.schemas import ChatMessage
from helpline.ui.client import GatewayClient, GatewayError, GatewayUnavailable

UI = Path(__file__).resolve().parents[2] / "helpline" / "ui"
FORBIDDEN = ("torch", "transformers", "vllm", "chromadb", "sentence_transformers")


def _event(**fields: object) -> str:
    return f"data: {json.dumps(fields)}\n\n"


def _client(handler) -> GatewayClient:
    return GatewayClient("http://gateway", "hl-key", transport=httpx.MockTransport(handler))


def test_stream_yields_deltas_then_exposes_citations_and_ids() -> None:
    body = (
        _event(id="chatcmpl-1", choices=[{"delta": {"role": "assistant", "content": ""}}])
        + _event(id="chatcmpl-1", choices=[{"delta": {"content": "Print "}}])
        + _event(id="chatcmpl-1", choices=[{"delta": {"content": "the label."}}])
        + _event(
            id="chatcmpl-1",
            choices=[{"delta": {}, "finish_reason": "stop"}],
            abstained=False,
            conversation_id="conv-1",
            citations=[{"doc_id": "returns", "title": "Returns", "chunk_id": "returns#0", "score": 0.8}],
        )
        + "data: [DONE]\n\n"
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    stream = _client(handler).chat_stream([ChatMessage(role="user", content="label?")], conversation_id="conv-1")
    assert "".join(stream) == "Print the label."
    assert stream.response_id == "chatcmpl-1" and stream.conversation_id == "conv-1"
    assert [c.doc_id for c in stream.citations] == ["returns"] and stream.abstained is False
    sent = json.loads(seen[0].content)
    assert sent["stream"] is True and sent["conversation_id"] == "conv-1"
    assert seen[0].headers["authorization"] == "Bearer hl-key"


def test_error_event_mid_stream_raises_a_readable_error() -> None:
    body = _event(id="x", choices=[{"delta": {"content": "Part"}}]) + _event(
        error={"message": "the engine failed mid-answer: boom", "type": "server_error", "code": 503}
    )
    stream = _client(lambda r: httpx.Response(200, text=body)).chat_stream([ChatMessage(role="user", content="q")])
    parts = []
    with pytest.raises(GatewayError, match="the answer stopped: the engine failed mid-answer"):
        for delta in stream:
            parts.append(delta)
    assert parts == ["Part"]


@pytest.mark.parametrize(("status", "hint"), [(401, "sign in again"), (429, "wait a moment"), (503, "busy")])
def test_refusals_carry_the_gateway_message_and_a_next_step(status: int, hint: str) -> None:
    error = {"error": {"message": f"refused with {status}", "type": "x", "code": status}}
    client = _client(lambda r: httpx.Response(status, json=error))
    with pytest.raises(GatewayError) as caught:
        client.chat_stream([ChatMessage(role="user", content="q")])
    assert caught.value.message == f"refused with {status}" and hint in (caught.value.hint or "")
    with pytest.raises(GatewayError, match=f"refused with {status}"):
        client.kb_documents()


def test_non_json_error_body_still_gives_a_message() -> None:
    client = _client(lambda r: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(GatewayError, match="HTTP 502"):
        client.models()


def test_gateway_that_is_down_is_reported_as_unavailable() -> None:
    client = GatewayClient("http://127.0.0.1:9", "hl-key", timeout=2)  # nothing listens on port 9
    assert client.health() is False
    with pytest.raises(GatewayUnavailable, match="not answering") as caught:
        client.whoami()
    assert "helpline run" in (caught.value.hint or "")


def test_ui_sources_import_no_model_or_index_library() -> None:
    """The before-stop check: the UI talks HTTP only; no torch/transformers/vllm/chromadb/ST, and of
    helpline only the platform's schemas, errors and settings (lint-imports states the same contract)."""
    pattern = re.compile(
        rf"^\s*(from|import)\s+({'|'.join(FORBIDDEN)}|helpline\.(?!ui\b|platform\.(schemas|errors|settings)\b)[\w.]+)\b"
    )
    offending = [
        f"{p.relative_to(UI)}:{n}: {line.strip()}"
        for p in UI.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.match(line)
    ]
    assert offending == []
    assert pattern.match("import torch") and pattern.match("    from helpline.answering.rag import x")  # can fail
    assert not pattern.match("from helpline.platform.schemas import ChatMessage")


def test_importing_the_ui_modules_loads_no_heavy_library() -> None:
    code = (
        "import json, sys; import helpline.ui.client, helpline.ui.session, helpline.ui.launch; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = set(
        json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    )
    assert not [m for m in FORBIDDEN if m in loaded]
