"""`helpline bench reliability --section load`: streamed chats at twice the gateway's concurrency cap.

``2 × cap`` clients each send a streamed chat as soon as their last one ended, for ``seconds``, against
a real `helpline run`. What must hold: every request is served or shed with 429/503 and Retry-After
(no other 5xx, no dropped connection), every served stream ends with ``[DONE]`` and no error event, the
engine is not restarted, and neither the gateway's nor the engine's resident memory grows by more than
``max_rss_growth`` over the run. Memory is read before the run after a warm-up burst at the cap (the
first answers load the detector and touch the engine's KV cache, which is not a leak) and after it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from helpline.bench.reliability.harness import LiveHelpline, process_tree, rss_mb
from helpline.evaluation.load import Sample, closed_loop, overload_summary, stream_chat
from helpline.retrieval import sample_questions

MODEL = "helpline-support"


def memory(live: LiveHelpline) -> dict[str, float]:
    """Resident memory now, in MiB: the gateway process alone, and the vLLM server with what it forked."""
    vllm = live.vllm_pid
    return {
        "gateway_mb": rss_mb([live.gateway_pid] if live.gateway_pid else []),
        "engine_mb": rss_mb(process_tree(vllm) if vllm else []),
    }


def rss_growth(before: dict[str, float], after: dict[str, float], *, limit: float) -> dict[str, dict[str, Any]]:
    """Per process: before, after, relative growth and whether it stayed within ``limit`` (0.10: 10%)."""
    out = {}
    for name, was in before.items():
        now = after.get(name, 0.0)
        growth = (now - was) / was if was else float("inf")
        out[name] = {"before": was, "after": now, "growth": round(growth, 4), "ok": growth <= limit}
    return out


class Chats:
    """Streamed chats against the live gateway, one sample question after another."""

    def __init__(self, live: LiveHelpline, client: httpx.AsyncClient) -> None:
        self.url = f"{live.base_url}/v1/chat/completions"
        self.key = live.keys["customer"]
        self.max_tokens = live.options.max_tokens
        self.client = client
        self.questions = sample_questions()
        self.sent = 0

    async def one(self) -> Sample:
        question = self.questions[self.sent % len(self.questions)]
        self.sent += 1
        body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": self.max_tokens}
        return await stream_chat(self.client, self.url, self.key, body)


async def _warm_up_then_load(live: LiveHelpline, *, clients: int, seconds: float, pause_s: float) -> dict[str, Any]:
    cap = live.options.concurrency_cap
    timeout = httpx.Timeout(live.options.upstream_timeout_s + 60, connect=10)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        chats = Chats(live, client)
        for _ in range(2):
            warm = await asyncio.gather(*(chats.one() for _ in range(cap)))
        before = memory(live)
        start = time.perf_counter()
        samples = await closed_loop(chats.one, workers=clients, seconds=seconds, pause_after_shed_s=pause_s)
        wall = time.perf_counter() - start
    return {"warm_up_served": sum(s.ok for s in warm), "before": before, "samples": samples, "wall": wall}


def run_load(
    live: LiveHelpline,
    *,
    seconds: float = 45.0,
    clients: int | None = None,
    pause_after_shed_s: float = 0.5,
    max_rss_growth: float = 0.10,
) -> dict[str, Any]:
    """The load scenario's figures and checks (``passed``: every check held)."""
    cap = live.options.concurrency_cap
    clients = clients or 2 * cap
    engine_before = live.vllm_pid
    run = asyncio.run(_warm_up_then_load(live, clients=clients, seconds=seconds, pause_s=pause_after_shed_s))
    after = memory(live)
    summary = overload_summary(run["samples"], run["wall"])
    rss = rss_growth(run["before"], after, limit=max_rss_growth)
    checks = {
        "no_other_5xx": summary["other_5xx"] == 0 and summary["no_response"] == 0,
        "shed_with_retry_after": summary["shed_without_retry_after"] == 0,
        "streams_end_with_done": summary["streams_without_done"] == 0 and summary["stream_error_events"] == 0,
        "engine_not_restarted": engine_before is not None and live.vllm_pid == engine_before,
        "gateway_rss_within_limit": rss["gateway_mb"]["ok"],
        "engine_rss_within_limit": rss["engine_mb"]["ok"],
    }
    return {
        "concurrency_cap": cap,
        "clients": clients,
        "seconds": seconds,
        "max_tokens": live.options.max_tokens,
        "pause_after_shed_s": pause_after_shed_s,
        "warm_up_served": run["warm_up_served"],
        **summary,
        "overloaded": summary["shed_503"] > 0,  # twice the cap did meet the cap
        "rss": rss,
        "max_rss_growth": max_rss_growth,
        "checks": checks,
        "passed": all(checks.values()),
    }
