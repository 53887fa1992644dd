"""`helpline bench reliability --section faults`: break a real `helpline run` and time its recovery.

Each scenario returns its figures and ``checks`` (booleans), ``passed`` when every check held, or
``skipped`` with the reason it could not run here:

- ``vllm_killed``: SIGKILL to the vLLM server while a streamed answer is generating. The customer's
  stream must end with an ``error`` event and ``[DONE]``, the supervisor must start a new server, and the
  next chat must be served; the seconds to each, and what of the old server outlived it.
- ``vllm_stopped``: SIGSTOP to the vLLM server (alive, answering nothing). The supervisor must find it
  hung (``vllm.hang_timeout_s``), replace it, and serve again; a chat sent meanwhile must end, one way or
  the other, with ``[DONE]``.
- ``gateway_killed``, ``disk_full``: see ``storage.py``; ``kb_sync_killed``: see ``kb_sync.py``.

Each one leaves the stack serving (it restarts it when a scenario could not), so the next one starts clean.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from helpline.bench.reliability.harness import (
    LiveHelpline,
    alive,
    cmdline,
    hang_detection_available,
    kill_all,
    process_tree,
)
from helpline.bench.reliability.kb_sync import kb_sync_killed
from helpline.bench.reliability.storage import disk_full, gateway_killed
from helpline.evaluation.load import Sample, stream_chat

MODEL = "helpline-support"
QUESTION = "How do I return an item?"
#: Longest the bench waits for the stack to serve again after a fault (vLLM alone takes ~40 s to start).
RECOVERY_S = 300.0


def chat(live: LiveHelpline, *, max_tokens: int | None = None, on_open: Callable[[], None] | None = None) -> Sample:
    """One streamed chat with the customer key, start to ``[DONE]`` (blocking)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": max_tokens or live.options.max_tokens}  # fmt: skip

    async def go() -> Sample:
        timeout = httpx.Timeout(live.options.upstream_timeout_s + 60, connect=10)
        async with httpx.AsyncClient(timeout=timeout) as client:
            url = f"{live.base_url}/v1/chat/completions"
            return await stream_chat(client, url, live.keys["customer"], body, on_open=on_open)

    return asyncio.run(go())


def wait_for(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> float | None:
    """Seconds until ``condition()`` holds, or None when it did not within ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if condition():
            return time.monotonic() - start
        time.sleep(every_s)
    return None


def served_again(live: LiveHelpline, timeout_s: float = RECOVERY_S) -> float | None:
    """Seconds until a chat is served whole again (one tried every 2 s)."""
    return wait_for(lambda: chat(live, max_tokens=8).ok, timeout_s, every_s=2.0)


def recovery(live: LiveHelpline, old_pid: int, old_tree: list[int], since: float) -> dict[str, Any]:
    """After the engine ``old_pid`` failed at ``since`` (monotonic): seconds from then until a new engine
    process ran, /ready answered 200 and a chat was served (None: not within ``RECOVERY_S``); what of the old
    engine was still alive by then (it is killed, so that it holds no memory for the scenarios after)."""

    def now() -> float:
        return round(time.monotonic() - since, 1)

    restarted = wait_for(lambda: live.vllm_pid not in (None, old_pid), RECOVERY_S) is not None
    new_engine = now() if restarted else None
    ready = now() if restarted and wait_for(live.ready, RECOVERY_S, every_s=1.0) is not None else None
    served = now() if ready is not None and served_again(live) is not None else None
    left = [p for p in old_tree if alive(p)]
    orphans = [cmdline(p)[:80] for p in left]
    kill_all(left)
    return {
        "new_engine_after_s": new_engine,
        "ready_after_s": ready,
        "served_again_after_s": served,
        "old_engine_processes_left": orphans,
    }


def turn_status(live: LiveHelpline, response_id: str) -> str | None:
    """How the gateway logged the turn (ok, error, cancelled), or None when it did not."""
    try:
        return live.store().turn(response_id)["status"] if response_id else None
    except Exception:  # NotFoundError, or a database the gateway holds busy: not logged as far as we can tell
        return None


def _ensure_serving(live: LiveHelpline) -> None:
    """Restart the stack when a scenario left it unable to serve (so the next one starts clean)."""
    if live.gateway_pid is None or not live.ready():
        live.restart()


def vllm_killed(live: LiveHelpline, *, after_open_s: float = 0.5) -> dict[str, Any]:
    """SIGKILL the vLLM server ``after_open_s`` after a streamed answer's response opened."""
    old = live.vllm_pid
    if old is None:
        return {"skipped": "no vLLM server runs under the gateway", "passed": False}
    old_tree = process_tree(old)
    opened = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        pending: Future[Sample] = pool.submit(chat, live, max_tokens=512, on_open=opened.set)
        opened.wait(60)
        time.sleep(after_open_s)
        mid_stream = not pending.done()
        os.kill(old, signal.SIGKILL)
        killed_at = time.monotonic()
        sample = pending.result()
    stream_end_s = round(time.monotonic() - killed_at, 1)
    figures = recovery(live, old, old_tree, killed_at)
    logged = turn_status(live, sample.response_id)
    checks = {
        "killed_mid_stream": mid_stream,
        "error_event_then_done": sample.error_event and sample.done,
        "engine_restarted": figures["new_engine_after_s"] is not None,
        "served_again": figures["served_again_after_s"] is not None,
        "turn_logged_as_error": logged == "error",
        "no_old_engine_process_left": not figures["old_engine_processes_left"],
    }
    return {
        "stream": {
            "status": sample.status,
            "error_event": sample.error_event,
            "done": sample.done,
            "error": sample.error,
            "ended_s_after_kill": stream_end_s,
        },
        "turn_logged_as": logged,
        **figures,
        "checks": checks,
        "passed": all(checks.values()),
    }


def vllm_stopped(live: LiveHelpline, *, chat_after_s: float = 1.0) -> dict[str, Any]:
    """SIGSTOP the vLLM server; a chat is sent ``chat_after_s`` later, while it is stopped."""
    if not hang_detection_available():
        return {"skipped": "this version's supervisor has no hang detection (no vllm.hang_timeout_s)", "passed": False}
    old = live.vllm_pid
    if old is None:
        return {"skipped": "no vLLM server runs under the gateway", "passed": False}
    old_tree = process_tree(old)
    os.kill(old, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        with ThreadPoolExecutor(1) as pool:
            time.sleep(chat_after_s)
            pending = pool.submit(chat, live)
            figures = recovery(live, old, old_tree, stopped_at)
            sample = pending.result()
    finally:
        if alive(old):  # not detected: let it go on, so the next scenarios find an engine
            os.kill(old, signal.SIGCONT)
    checks = {
        "hang_detected_and_engine_restarted": figures["new_engine_after_s"] is not None,
        "served_again": figures["served_again_after_s"] is not None,
        "chat_during_hang_ended_with_done": sample.done,
        "no_old_engine_process_left": not figures["old_engine_processes_left"],
    }
    return {
        "hang_timeout_s": live.options.hang_timeout_s,
        "chat_during_hang": {
            "status": sample.status,
            "ok": sample.ok,
            "error_event": sample.error_event,
            "done": sample.done,
            "e2e_s": round(sample.e2e, 1),
            "error": sample.error,
        },
        **figures,
        "checks": checks,
        "passed": all(checks.values()),
    }


SCENARIOS: dict[str, Callable[[LiveHelpline], dict[str, Any]]] = {
    "vllm_killed": vllm_killed,
    "vllm_stopped": vllm_stopped,
    "gateway_killed": gateway_killed,
    "disk_full": disk_full,
    "kb_sync_killed": kb_sync_killed,
}


def run_faults(live: LiveHelpline, *, scenarios: tuple[str, ...] = tuple(SCENARIOS)) -> dict[str, Any]:
    """Each scenario in turn on ``live``; one that raises is reported as failed with its error."""
    out: dict[str, Any] = {}
    for name in scenarios:
        _ensure_serving(live)
        started = time.perf_counter()
        try:
            out[name] = SCENARIOS[name](live)
        except Exception as e:  # a broken scenario is a finding, the others still run
            out[name] = {"error": f"{type(e).__name__}: {e}"[:2000], "passed": False}
        out[name]["scenario_s"] = round(time.perf_counter() - started, 1)
    _ensure_serving(live)
    out["passed"] = all(r.get("passed", False) or "skipped" in r for r in out.values() if isinstance(r, dict))
    return out
