"""Load generation and its figures: streamed requests at a given concurrency against any
OpenAI-compatible endpoint, sequential requests through an in-process generator, and the summary
(output tokens/s, time to first token and end-to-end latency, p50/p95) that every bench reports.

Used by `helpline bench serving` and by the distillation report.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage


@dataclass
class Sample:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    tokens: int = 0
    error: str = ""


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
        return Sample(ok=False, error=f"{type(e).__name__}: {e}"[:200])
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
