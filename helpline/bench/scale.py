"""`helpline bench scale`: throughput and latency of one and of two gateway replicas over one engine.

Each replica is a real `helpline run --no-ui` process on a copy of the workspace (one copy, shared by the replicas
as they share a volume), reaching the engine by ``vllm.url``. Streamed chats come from closed-loop clients spread
over the replicas (as a proxy spreads them). Two engines:

- **gateway-bound**: an instant engine (a stand-in that streams a fixed answer at once), so what is measured is the
  gateway's own work per chat (keys, retrieval, verification, the extractive reader, logging);
- **engine-bound**: the real vLLM (`helpline engine`), where the replicas wait on the one engine.

And the cost of Redis (``redis_url``: shared rate limits and concurrency cap) against the default, one replica,
gateway-bound; and failover: one of two replicas killed with SIGKILL under load, its chats sent again to the other,
every acknowledged chat looked up in the database; and the gateway database's share of a chat (``database.py``:
SQLite, and PostgreSQL given ``--database-url``). Run it on an idle machine; replicas, clients and the engine share
its cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from helpline.bench.database import database_overhead
from helpline.bench.reliability.harness import copy_workspace, helpline_env
from helpline.evaluation.load import Sample, closed_loop, free_port, pct, serve_app, stream_chat
from helpline.platform.context import Context
from helpline.platform.errors import EngineError, NotFoundError
from helpline.platform.lazy_imports import require
from helpline.platform.workspace import Workspace
from helpline.retrieval import sample_questions
from helpline.serving.factory import gateway_db
from helpline.serving.gateway.store import ROLE_RANK, GatewayStore

#: What the instant engine streams for every chat: a support-shaped answer, in a few deltas.
INSTANT_ANSWER = ["You can return ", "an item within ", "30 days of delivery ", "from your orders page."]


@dataclass
class ScaleOptions:
    seconds: float = 30.0  # each measured run
    clients: int = 8  # closed-loop clients, spread over the replicas
    max_tokens: int = 32
    engine_bound: bool = True  # also measure over the real vLLM
    redis: bool = True  # also measure the default against redis_url
    failover: bool = True  # also kill one of two replicas under load
    database_turns: int = 2000  # the database's share of a chat: turns timed (0: not measured)
    database_url: str | None = None  # also on this scratch PostgreSQL database


def instant_engine(served_name: str) -> Any:
    """An OpenAI-compatible stand-in for vLLM that answers every chat at once (gateway-bound measurements)."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": served_name, "object": "model"}]}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict:
        body = await request.json()
        text = json.dumps(body.get("messages", body.get("prompt", "")))
        return {"count": len(text) // 4 + 1, "max_model_len": 2048}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        created, model = int(time.time()), body.get("model", served_name)
        if not body.get("stream"):
            return {"id": "cmpl-instant", "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "".join(INSTANT_ANSWER)}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 16, "total_tokens": 116}}  # fmt: skip

        def events() -> Iterator[str]:
            for i, piece in enumerate(INSTANT_ANSWER):
                delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
                chunk = {"id": "cmpl-instant", "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
                yield f"data: {json.dumps(chunk)}\n\n"
            end = {"id": "cmpl-instant", "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 100, "completion_tokens": 16, "total_tokens": 116}}  # fmt: skip
            yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class Process:
    """A `helpline ...` or `redis-server` process of the bench, its output in ``log``; stopped with its group."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None, cwd: Path, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def wait_http(self, url: str, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(f"{self.log.stem} exited: {self.log.read_text(errors='replace')[-1500:]}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise EngineError(f"{self.log.stem} was not ready in {timeout_s:.0f} s", hint=f"see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@contextmanager
def redis_process(folder: Path) -> Iterator[str]:
    """A throwaway `redis-server` on loopback (Debian's redis-server package); yields its URL."""
    if shutil.which("redis-server") is None:
        raise EngineError("redis-server is not installed", hint="apt-get install redis-server, or pass --no-redis")
    port = free_port()
    proc = Process(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(folder)], env=None, cwd=folder, log=folder / "redis.log")  # fmt: skip
    redis = require("redis", "shared")
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(f"redis://127.0.0.1:{port}/0").ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.stop()
                raise EngineError("redis-server did not start", hint=f"see {folder / 'redis.log'}") from None
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()


def _measure(urls: list[str], key: str, options: ScaleOptions) -> dict[str, Any]:
    """Closed-loop streamed chats spread over ``urls`` for ``options.seconds``, after a warm-up on each."""
    questions = sample_questions()
    sent = 0

    async def run() -> tuple[list[Sample], float]:
        nonlocal sent
        timeout = httpx.Timeout(300, connect=10)
        limits = httpx.Limits(max_connections=options.clients + 4, max_keepalive_connections=options.clients + 4)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

            async def one() -> Sample:
                nonlocal sent
                url, question = urls[sent % len(urls)], questions[sent % len(questions)]
                sent += 1
                body = {"model": "helpline-support", "messages": [{"role": "user", "content": question}],
                        "max_tokens": options.max_tokens}  # fmt: skip
                return await stream_chat(client, f"{url}/v1/chat/completions", key, body)

            await asyncio.gather(*(one() for _ in range(2 * len(urls))))  # each replica loads what it loads lazily
            start = time.perf_counter()
            samples = await closed_loop(one, workers=options.clients, seconds=options.seconds)
            return samples, time.perf_counter() - start

    samples, wall = asyncio.run(run())
    served = [s for s in samples if s.ok]
    return {
        "replicas": len(urls),
        "requests": len(samples),
        "served": len(served),
        "failed": len(samples) - len(served),
        "served_per_s": round(len(served) / wall, 2),
        "e2e_p50_s": round(pct([s.e2e for s in served], 0.5), 3),
        "e2e_p95_s": round(pct([s.e2e for s in served], 0.95), 3),
        "errors": sorted({s.error for s in samples if not s.ok})[:3],
    }


def failover(replicas: Replicas, workspace: Path, key: str, options: ScaleOptions) -> dict[str, Any]:
    """Streamed chats over two replicas; a third of the way in, replica A's process group is killed with SIGKILL.
    A chat that got no answer from A is sent again to B (as the proxy or an OpenAI client retries). Then every
    acknowledged chat (its stream ended with ``[DONE]``, which the gateway sends after it logged the turn) is
    looked up in the replicas' shared database."""
    urls = replicas.start(2)
    questions = sample_questions()
    killed_at: list[float] = []

    async def run() -> list[tuple[Sample, Sample | None]]:
        sent = 0
        timeout = httpx.Timeout(120, connect=5)
        limits = httpx.Limits(max_connections=options.clients + 4, max_keepalive_connections=options.clients + 4)
        pairs: list[tuple[Sample, Sample | None]] = []
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

            async def one() -> Sample:
                nonlocal sent
                first, question = sent % 2, questions[sent % len(questions)]
                sent += 1
                body = {"model": "helpline-support", "messages": [{"role": "user", "content": question}],
                        "max_tokens": options.max_tokens}  # fmt: skip
                sample = await stream_chat(client, f"{urls[first]}/v1/chat/completions", key, body)
                retry = None
                if not sample.ok and killed_at:  # the other replica: B, or A before it died
                    retry = await stream_chat(client, f"{urls[1 - first]}/v1/chat/completions", key, body)
                pairs.append((sample, retry))
                return retry or sample

            async def kill() -> None:
                await asyncio.sleep(options.seconds / 3)
                os.killpg(replicas.processes[0].proc.pid, signal.SIGKILL)
                killed_at.append(time.monotonic())

            await asyncio.gather(closed_loop(one, workers=options.clients, seconds=options.seconds), kill())
        return pairs

    try:
        pairs = asyncio.run(run())
    finally:
        replicas.stop()
    acknowledged = [s.response_id for first, retry in pairs for s in (first, retry) if s is not None and s.ok]
    store = GatewayStore(gateway_db(Workspace.at(workspace)))
    missing = [rid for rid in acknowledged if not _logged(store, rid)]
    retried = [retry for _, retry in pairs if retry is not None]
    return {
        "chats": len(pairs),
        "acknowledged": len(acknowledged),
        "acknowledged_missing_from_database": len(missing),
        "failed_on_first_replica": sum(not first.ok for first, _ in pairs),
        "retried_on_other": len(retried),
        "retries_served": sum(r.ok for r in retried),
        "unserved_after_retry": sum(not (retry or first).ok for first, retry in pairs),
    }


def _logged(store: GatewayStore, response_id: str) -> bool:
    try:
        store.turn(response_id)
        return True
    except NotFoundError:
        return False


class Replicas:
    """Gateway replicas (`helpline run --no-ui`) on one workspace, reaching the engine at ``engine_url``."""

    def __init__(
        self, workspace: Path, root: Path, *, engine_url: str, redis_url: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        """``settings``: more HELPLINE_* variables for every replica (they override the bench's own)."""
        self.workspace, self.root = workspace, root
        self.engine_url, self.redis_url = engine_url, redis_url
        self.settings = dict(settings or {})
        self.processes: list[Process] = []
        self.urls: list[str] = []

    def start(self, n: int) -> list[str]:
        for _ in range(n):
            port = free_port()
            env = {"HELPLINE_VLLM__URL": self.engine_url, "HELPLINE_GATEWAY__PORT": str(port),
                   # the bench measures throughput, not the limits: neither may shed a request
                   "HELPLINE_GATEWAY__LIMITS__REQUESTS_PER_MINUTE": "1000000",
                   "HELPLINE_GATEWAY__LIMITS__BURST": "100000",
                   "HELPLINE_GATEWAY__LIMITS__MAX_CONCURRENCY": "1000"}  # fmt: skip
            if self.redis_url:
                env["HELPLINE_REDIS_URL"] = self.redis_url
            env |= self.settings
            log = self.root / f"gateway-{len(self.processes)}.log"
            proc = Process([sys.executable, "-m", "helpline", "run", "--no-ui"], cwd=self.root, log=log,
                           env=helpline_env(self.workspace, env))  # fmt: skip
            self.processes.append(proc)
            url = f"http://127.0.0.1:{port}"
            proc.wait_http(f"{url}/ready", timeout_s=600)
            self.urls.append(url)
        return self.urls

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()
        self.processes, self.urls = [], []


def _runs(workspace: Path, root: Path, key: str, engine_url: str, options: ScaleOptions,
          redis_url: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One replica, then two, over the engine at ``engine_url``; the figures and the two-to-one ratio."""
    out: dict[str, Any] = {}
    for n in (1, 2):
        replicas = Replicas(workspace, root, engine_url=engine_url, redis_url=redis_url)
        try:
            out[f"replicas_{n}"] = _measure(replicas.start(n), key, options)
        finally:
            replicas.stop()
    one, two = out["replicas_1"]["served_per_s"], out["replicas_2"]["served_per_s"]
    out["two_to_one"] = round(two / one, 3) if one else None
    return out


def run_scale_bench(ctx: Context, options: ScaleOptions) -> dict[str, Any]:
    """The figures of `helpline bench scale` (see the module)."""
    record = ctx.registry.chat_model(ctx.settings.chat_model)
    base = record.base_model if record.kind == "adapter" and record.base_model else record.name
    with tempfile.TemporaryDirectory(prefix="helpline-scale-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        workspace = root / ".helpline"
        copy_workspace(ctx.workspace.root, workspace)
        store = GatewayStore(gateway_db(Workspace.at(workspace)))
        keys = {role: store.create_key(role, name=f"bench-{role}", actor="bench")[0] for role in ROLE_RANK}  # type: ignore[misc]
        server, _, engine_url = serve_app(instant_engine(base))
        stack.callback(setattr, server, "should_exit", True)
        report: dict[str, Any] = {
            "machine": {"cpus": _cpus()},
            "options": {"seconds": options.seconds, "clients": options.clients, "max_tokens": options.max_tokens},
            "gateway_bound": _runs(workspace, root, keys["customer"], engine_url, options),
        }
        if options.redis:
            redis_url = stack.enter_context(redis_process(root))
            replicas = Replicas(workspace, root, engine_url=engine_url, redis_url=redis_url)
            try:
                with_redis = _measure(replicas.start(1), keys["customer"], options)
            finally:
                replicas.stop()
            alone = report["gateway_bound"]["replicas_1"]["served_per_s"]
            report["redis"] = {
                "replicas_1": with_redis,
                "throughput_vs_default": round(with_redis["served_per_s"] / alone, 3) if alone else None,
            }
        if options.database_turns:
            report["database"] = database_overhead(root, url=options.database_url, turns=options.database_turns)
        if options.failover:
            replicas = Replicas(workspace, root, engine_url=engine_url)
            report["failover"] = failover(replicas, workspace, keys["customer"], options)
        if options.engine_bound:
            port = free_port()
            engine = Process([sys.executable, "-m", "helpline", "engine"], cwd=root, log=root / "engine.log",
                             env=helpline_env(workspace, {"HELPLINE_VLLM__PORT": str(port)}))  # fmt: skip
            stack.callback(engine.stop)
            engine.wait_http(f"http://127.0.0.1:{port}/health", timeout_s=900)
            report["engine_bound"] = _runs(workspace, root, keys["customer"], f"http://127.0.0.1:{port}", options)
        return report


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
