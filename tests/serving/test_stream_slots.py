"""A streamed answer gives its concurrency slot back however it ends, even before its first chunk."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from helpline.serving.gateway.auth import Principal
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.protocol import ChatCompletionRequest
from helpline.testing.serving import Gateway, make_gateway

RETURN_Q = "How do I return an item?"
CAP = 2


def _scope(gw: Gateway, body: bytes, spec_version: str) -> dict:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {gw.keys['customer']}".encode()),
    ]
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "root_path": "", "query_string": b"", "headers": headers, "client": ("test", 1), "server": ("testserver", 80),
    }  # fmt: skip


async def _gone_before_the_first_chunk(gw: Gateway, spec_version: str) -> None:
    """One streamed request whose client goes away once the headers are on their way: on ASGI 2.4 the
    send fails (Starlette's ClientDisconnect), on earlier versions the server reports the disconnect."""
    body = json.dumps(
        {"model": "helpline-support", "stream": True, "messages": [{"role": "user", "content": RETURN_Q}]}
    )
    sent_request = False

    async def receive() -> dict:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": body.encode(), "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start" and message["status"] == 200:
            if spec_version >= "2.4":
                raise OSError("client went away")
            await asyncio.Event().wait()  # blocked until the disconnect cancels the response

    with contextlib.suppress(Exception):
        await gw.client.app(_scope(gw, body.encode(), spec_version), receive, send)


def test_streams_closed_before_their_first_chunk_do_not_use_up_the_concurrency_cap(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, GatewayLimits(max_concurrency=CAP))
    for spec_version in ("2.4", "2.3") * (CAP + 1):
        asyncio.run(_gone_before_the_first_chunk(gw, spec_version))
    assert gw.client.app.state.chat_service.gate.active == 0
    assert gw.chat("customer", RETURN_Q, stream=True).status_code == 200
    assert gw.chat("customer", RETURN_Q).status_code == 200


def test_a_stream_closed_before_it_started_gives_its_slot_back_and_is_logged_as_cancelled(gateway: Gateway) -> None:
    service = gateway.client.app.state.chat_service
    principal = Principal(gateway.store.lookup(gateway.keys["customer"]))  # type: ignore[arg-type]
    body = ChatCompletionRequest(messages=[{"role": "user", "content": RETURN_Q}], stream=True)

    async def open_and_close() -> None:
        for _ in range(CAP + 1):
            events = await service.stream(body, principal)
            await events.aclose()

    asyncio.run(open_and_close())
    assert service.gate.active == 0
    assert [t["status"] for t in gateway.store.turns()] == ["cancelled"] * (CAP + 1)
