"""Load generation and its figures: streamed requests at a given concurrency against any
OpenAI-compatible endpoint, sequential requests through an in-process generator, and the summary
(output tokens/s, time to first token and end-to-end latency, p50/p95) that every bench reports.
Under overload, a closed loop of streamed chats read as raw server-sent events (status, Retry-After, an
``error`` event, the closing ``[DONE]``) and the shares of what was served, shed and failed.

Used by `helpline bench serving`, `helpline bench reliability` and by the distillation report.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage


@dataclass
class Sample:
    """One request. ``status`` is the HTTP status (0: no response at all); for a stream, ``done`` says the
    closing ``[DONE]`` arrived and ``error_event`` that an ``error`` event came before it."""

    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    tokens: int = 0
    error: str = ""
    status: int = 200
    retry_after: str | None = None
    done: bool = False
    error_event: bool = False
    response_id: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(samples: list[Sample], wall: float) -> dict[str, Any]:
    good = [s for s in samples if s.ok]
    tokens = sum(s.tokens for s in good)
    return {
        "requests": len(samples),
        "failed": len(samples) - len(good),
        "output_tokens": tokens,
        "wall_s": round(wall, 2),
        "output_tokens_per_s": round(tokens / wall, 2) if wall else 0.0,
        "ttft_p50_s": round(pct([s.ttft for s in good], 0.5), 3),
        "ttft_p95_s": round(pct([s.ttft for s in good], 0.95), 3),
        "e2e_p50_s": round(pct([s.e2e for s in good], 0.5), 3),
        "e2e_p95_s": round(pct([s.e2e for s in good], 0.95), 3),
        "errors": sorted({s.error for s in samples if not s.ok})[:3],
    }


# clients ----------------------------------------------------------------------------------------


async def stream_one(
    client: Any, model: str, messages: list[dict], max_tokens: int, *, full_length: bool = False
) -> Sample:
    """One streamed request; TTFT at the first content delta; tokens from the usage chunk.
    ``full_length`` asks vLLM to ignore end-of-sequence, so every answer is ``max_tokens`` long."""
    start = time.perf_counter()
    ttft, tokens, deltas = 0.0, 0, 0
    extra_body = {"ignore_eos": True} if full_length else None
    try:
        stream = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True,
            stream_options={"include_usage": True}, extra_body=extra_body,
        )  # fmt: skip
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas += 1
                if not ttft:
                    ttft = time.perf_counter() - start
            if getattr(chunk, "usage", None):
                tokens = chunk.usage.completion_tokens
            extra = chunk.model_extra or {}
            if "error" in extra:
                return Sample(ok=False, error=str(extra["error"])[:200])
    except Exception as e:  # a failed request is a data point, not a crash of the bench
        headers = getattr(getattr(e, "response", None), "headers", None) or {}
        return Sample(
            ok=False, error=f"{type(e).__name__}: {e}"[:200], status=getattr(e, "status_code", 0),
            retry_after=headers.get("retry-after"),
        )  # fmt: skip
    return Sample(ok=True, ttft=ttft, e2e=time.perf_counter() - start, tokens=tokens or deltas)


def level(base_url: str, key: str, model: str, prompts: list[list[dict]], *, concurrency: int, n: int,
          max_tokens: int, full_length: bool = False) -> dict[str, Any]:  # fmt: skip
    """One level in its own event loop, with a client (and connection pool) made for that loop."""
    openai = require("openai", "serve")

    async def go() -> dict[str, Any]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600) as client:
            return await run_level(client, model, prompts, concurrency=concurrency, n=n, max_tokens=max_tokens,
                                   full_length=full_length)  # fmt: skip

    result = asyncio.run(go())
    print(f"  {model} c={concurrency}: {result}", file=sys.stderr, flush=True)  # partial results survive an abort
    return result


async def run_level(
    client: Any, model: str, prompts: list[list[dict]], *, concurrency: int, n: int, max_tokens: int,
    full_length: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """``n`` requests, at most ``concurrency`` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Sample:
        async with gate:
            return await stream_one(client, model, prompts[i % len(prompts)], max_tokens, full_length=full_length)

    start = time.perf_counter()
    samples = await asyncio.gather(*(one(i) for i in range(n)))
    return summarize(list(samples), time.perf_counter() - start)


# overload: raw streams, a closed loop, what was shed ---------------------------------------------


async def stream_chat(
    client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any], *, on_open: Callable[[], None] | None = None
) -> Sample:
    """One streamed chat read as raw server-sent events, so a refusal keeps its status and Retry-After and
    a stream shows whether it carried an ``error`` event and ended with ``[DONE]``. ``ok``: a 200 that
    ended with ``[DONE]`` and no error event. A connection that drops keeps the status it had (0: none).
    ``on_open`` is called when the status arrives (a fault can then be timed against the open stream)."""
    start = time.perf_counter()
    status, ttft, deltas, done, error, error_event, rid = 0, 0.0, 0, False, "", False, ""
    try:
        async with client.stream(
            "POST", url, json={**body, "stream": True}, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            status = resp.status_code
            if on_open is not None:
                on_open()
            if status != 200:
                text = (await resp.aread()).decode(errors="replace")
                return Sample(ok=False, e2e=time.perf_counter() - start, error=text[:200], status=status,
                              retry_after=resp.headers.get("retry-after"))  # fmt: skip
            async for line in resp.aiter_lines():
                data = line.removeprefix("data:").strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data) if data else {}
                rid = rid or event.get("id", "")
                if "error" in event:
                    error, error_event = json.dumps(event["error"])[:200], True
                elif event.get("choices") and event["choices"][0]["delta"].get("content"):
                    deltas += 1
                    ttft = ttft or time.perf_counter() - start
    except (httpx.HTTPError, ValueError) as e:  # a dropped connection or a garbled event is a data point
        error = f"{type(e).__name__}: {e}"[:200]
    ok = done and not error
    return Sample(ok=ok, ttft=ttft, e2e=time.perf_counter() - start, tokens=deltas, status=status, done=done,
                  error=error or ("" if done else "no [DONE]"), error_event=error_event, response_id=rid)  # fmt: skip


async def closed_loop(
    send: Callable[[], Awaitable[Sample]], *, workers: int, seconds: float, pause_after_shed_s: float = 0.5
) -> list[Sample]:
    """``workers`` clients, each sending its next request as soon as the last one ended, for ``seconds``.
    A shed client (429 or 503) waits ``pause_after_shed_s`` first: a client that retried at once would
    measure how fast the gateway refuses, not how it holds up."""
    deadline = time.monotonic() + seconds
    samples: list[Sample] = []

    async def client() -> None:
        while time.monotonic() < deadline:
            sample = await send()
            samples.append(sample)
            if sample.status in (429, 503):
                await asyncio.sleep(pause_after_shed_s)

    await asyncio.gather(*(client() for _ in range(workers)))
    return samples


def share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def overload_summary(samples: list[Sample], wall: float) -> dict[str, Any]:
    """What overload did to the requests: served, shed (429 or 503, each with Retry-After or not), and what
    must stay at zero (any other 5xx, no response, a stream cut without ``[DONE]``), with shares of all
    requests; latency figures are the served requests' (``summarize``)."""
    shed = [s for s in samples if s.status in (429, 503)]
    other_5xx = [s for s in samples if s.status >= 500 and s.status != 503]
    streams = [s for s in samples if s.status == 200]
    n = len(samples)
    counts = {
        "served": sum(s.ok for s in samples),
        "shed_429": sum(s.status == 429 for s in shed),
        "shed_503": sum(s.status == 503 for s in shed),
        "shed_without_retry_after": sum(not s.retry_after for s in shed),
        "other_5xx": len(other_5xx),
        "other_4xx": sum(400 <= s.status < 500 and s.status != 429 for s in samples),
        "no_response": sum(s.status == 0 for s in samples),
        "stream_error_events": sum(s.error_event for s in streams),
        "streams_without_done": sum(not s.done for s in streams),
    }
    served = summarize([s for s in samples if s.ok], wall)
    return {
        "requests": n,
        **counts,
        "shed_share": share(len(shed), n),
        "other_5xx_share": share(len(other_5xx), n),
        "requests_per_s": round(n / wall, 2) if wall else 0.0,
        "served_per_s": round(counts["served"] / wall, 2) if wall else 0.0,
        **{k: served[k] for k in ("ttft_p50_s", "ttft_p95_s", "e2e_p50_s", "e2e_p95_s", "output_tokens")},
        "errors": sorted({s.error for s in samples if not s.ok and s.status not in (429, 503)})[:5],
    }


def sequential(gen: Any, prompts: list[list[ChatMessage]], *, n: int, max_tokens: int) -> dict:
    """``n`` streamed requests one after another through an in-process generator (tokens counted
    with its tokenizer); the first prompt is answered once untimed as a warm-up."""
    gen.generate(prompts[0], max_tokens=4)  # warm-up
    samples = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        ttft, parts = 0.0, []
        for delta in gen.stream(prompts[i % len(prompts)], max_tokens=max_tokens):
            if delta and not ttft:
                ttft = time.perf_counter() - t0
            parts.append(delta)
        tokens = len(gen.tokenizer("".join(parts), add_special_tokens=False)["input_ids"])
        samples.append(Sample(ok=True, ttft=ttft, e2e=time.perf_counter() - t0, tokens=tokens))
    return summarize(samples, time.perf_counter() - start)


def serve_app(app: Any) -> tuple[Any, threading.Thread, str]:
    """Run an ASGI app with uvicorn on a free loopback port in a daemon thread: (server, thread, base URL)."""
    uvicorn = require("uvicorn", "serve")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the app did not start on port {port}")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"
