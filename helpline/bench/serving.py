"""`helpline bench serving`: the same prompts through transformers (sequential), vLLM directly and
the gateway (with retrieval), at several concurrency levels; base model against an adapter; and an
adapter swap under load.

Everything runs on free loopback ports against a throwaway copy of the registry, so the bench never
changes the workspace's aliases or keys.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from helpline.answering.rag import citations
from helpline.engines.hf import TransformersGenerator
from helpline.engines.openai_http import OpenAIGenerator
from helpline.engines.vllm_server import VLLMServer
from helpline.evaluation.load import free_port, level, run_level, sequential, serve_app
from helpline.platform.context import Context
from helpline.platform.lazy_imports import require
from helpline.platform.registry import ModelRecord, Registry
from helpline.platform.schemas import ChatMessage
from helpline.retrieval import sample_questions
from helpline.retrieval.factory import open_knowledge_base
from helpline.serving.factory import build_gateway, build_pipeline, build_verifier
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.routing import VLLMBackend

console = Console(stderr=True)


@dataclass
class BenchOptions:
    levels: list[int] = field(default_factory=lambda: [1, 8, 16, 32])
    requests: int = 0  # per level; 0 = max(8, 2 x level)
    max_tokens: int = 64
    skip: set[str] = field(default_factory=set)
    transformers_requests: int = 4

    def requests_for(self, concurrency: int) -> int:
        """Requests sent at one concurrency level."""
        return self.requests or max(8, 2 * concurrency)


def check_ms(pipeline: Any, answer: str, passages: list[Any]) -> float:
    """Milliseconds the gateway spends on a finished answer: the verifier's check and the citations."""
    start = time.perf_counter()
    pipeline.verify(answer, passages)
    citations(passages, answer=answer)
    return (time.perf_counter() - start) * 1000


def transformers_sequential(model_path: str, prompts: list[list[ChatMessage]], *, n: int, max_tokens: int) -> dict:
    """One request after another in-process (the fallback engine), streamed to get TTFT."""
    return sequential(TransformersGenerator(model_path), prompts, n=n, max_tokens=max_tokens)


# adapter ---------------------------------------------------------------------------------------


def random_adapter(base_path: str, out: Path, *, rank: int = 16) -> Path:
    """A LoRA adapter with random (non-zero) weights on every attention and MLP projection: the same
    compute as a trained one, for measuring speed when no trained adapter is registered."""
    torch = require("torch", "train")
    LoraConfig = require("peft", "train").LoraConfig
    get_peft_model = require("peft", "train").get_peft_model
    AutoModelForCausalLM = require("transformers", "train").AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=targets))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    peft_model.save_pretrained(out)
    return out


def bench_adapter(registry: Registry, base: ModelRecord, tmp: Path) -> ModelRecord:
    trained = [m for m in registry.list_models("adapter") if m.base_model == base.name]
    if trained:
        return trained[-1]
    path = random_adapter(base.path, tmp / "bench-adapter")
    return registry.register_model(
        "bench-random-lora", kind="adapter", path=path, base_model=base.name, metadata={"random": True}
    )


# orchestration -----------------------------------------------------------------------------------


def _copy_registry(src: Path, dst: Path) -> Registry:

    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)  # consistent even while the WAL has uncommitted pages
    return Registry(dst)


async def _swap_under_load(gw_client: Any, admin: Any, questions: list[list[dict]], adapter: str, n: int) -> dict:
    """Load at concurrency 8 while production is promoted to the adapter and rolled back."""
    load = asyncio.create_task(run_level(gw_client, "helpline-support", questions, concurrency=8, n=n, max_tokens=32))
    await asyncio.sleep(3)
    t0 = time.perf_counter()
    # force: this measures the swap mechanics on a copy of the registry, not the evaluation gate
    promote = await admin.post("/admin/models/promote", json={"name": adapter, "force": True})
    promote_s = time.perf_counter() - t0
    await asyncio.sleep(3)
    rollback = await admin.post("/admin/models/rollback", json={})
    summary = await load
    return {
        "load": summary,
        "promote_status": promote.status_code,
        "promote_s": round(promote_s, 2),
        "rollback_status": rollback.status_code,
        "lost_or_failed": summary["failed"],
    }


@dataclass
class BenchSetup:
    """The parts every measurement shares, on a throwaway registry copy in ``tmp``: the base model, its
    vLLM server (not started yet), and the pipeline whose retrieval half runs in-process."""

    tmp: Path
    registry: Registry
    base: ModelRecord
    vllm_settings: Any
    server: Any
    engine: Any
    verifier: Any
    pipeline: Any


@dataclass
class PreparedPrompts:
    """The sample questions through the pipeline's retrieval half; only those it did not abstain on are asked."""

    prompts: list[list[ChatMessage]]
    raw: list[list[dict]]  # the same questions as a client sends them to the gateway
    passages: list[list[Any]]
    prepare_ms: list[float]  # every question
    answered_ms: list[float]  # the questions asked
    as_dicts: list[list[dict]] = field(default_factory=list)


def set_up(ctx: Context) -> BenchSetup:
    """Copy the registry, resolve the served base model, and build its vLLM server and the pipeline."""
    s = ctx.settings
    tmp = Path(tempfile.mkdtemp(prefix="helpline-bench-"))
    registry = _copy_registry(ctx.workspace.registry_db, tmp / "registry.sqlite")
    bench = Context(s, workspace=ctx.workspace, registry=registry)
    base = registry.base_of(registry.chat_model(s.chat_model))
    kb = open_knowledge_base(bench)
    # The gateway's own answer check (the registered detector unless gateway.detector says otherwise).
    vllm_settings = s.vllm.model_copy(update={"port": free_port()})
    server = VLLMServer(model_path=base.path, served_name=base.name, settings=vllm_settings, log_path=tmp / "vllm.log")
    verifier = build_verifier(bench)
    # Only the retrieval half (prepare) runs in-process; the engine answers once it is started below.
    engine = OpenAIGenerator(server.base_url, base.name)
    pipeline = build_pipeline(bench, generator=engine, kb=kb, verifier=verifier)
    return BenchSetup(tmp, registry, base, vllm_settings, server, engine, verifier, pipeline)


def prepare_prompts(pipeline: Any, questions: list[str]) -> PreparedPrompts:
    """Run retrieval on every question, timing it; keep the prompts of those the pipeline answers."""
    out = PreparedPrompts([], [], [], [], [])
    for q in questions:
        conv = [ChatMessage(role="user", content=q)]
        t0 = time.perf_counter()
        prepared = pipeline.prepare(conv, role="customer")
        out.prepare_ms.append((time.perf_counter() - t0) * 1000)
        if not prepared.abstained:
            out.prompts.append(prepared.messages)
            out.raw.append([{"role": "user", "content": q}])
            out.passages.append(prepared.passages)
            out.answered_ms.append(out.prepare_ms[-1])
    out.as_dicts = [[m.model_dump() for m in p] for p in out.prompts]
    return out


def verify_overhead(setup: BenchSetup, prepared: PreparedPrompts, max_tokens: int) -> dict[str, float]:
    """The verifier's and citations' time on the model's real answers, and the whole in-process overhead."""
    # Verification and citation run on the finished answer: time them on the model's real answers.
    pipeline, passages = setup.pipeline, prepared.passages
    answers = [setup.engine.generate(p, max_tokens=max_tokens).text for p in prepared.prompts]
    if answers:
        check_ms(pipeline, answers[0], passages[0])  # warm-up (the detector's first call builds its kernels)
    after_ms = [check_ms(pipeline, text, found) for text, found in zip(answers, passages, strict=True)]
    total_ms = [a + b for a, b in zip(prepared.answered_ms, after_ms, strict=True)]
    return {
        "overhead_verify_ms_p50": round(statistics.median(after_ms), 2),
        "overhead_ms_p50": round(statistics.median(total_ms), 2),
    }


def vllm_direct_levels(direct: str, model: str, prompts: list[list[dict]], opts: BenchOptions) -> dict[int, dict]:
    """vLLM's own OpenAI endpoint at every concurrency level."""
    out = {}
    for c in opts.levels:
        console.print(f"vLLM direct, concurrency {c}")
        out[c] = level(direct, "x", model, prompts, concurrency=c, n=opts.requests_for(c), max_tokens=opts.max_tokens)
    return out


def adapter_vs_base(setup: BenchSetup, adapter: ModelRecord, prompts: list[list[dict]], opts: BenchOptions) -> dict:
    """The base model against the adapter loaded beside it, at the levels from 8 up (all, if none is)."""
    direct, base = setup.server.base_url, setup.base.name
    name = VLLMBackend.served_name(adapter)
    setup.server.load_lora(name, adapter.path)
    out: dict[str, Any] = {"name": adapter.name, "random": bool(adapter.metadata.get("random")), "base": {}, "lora": {}}
    # vLLM caches prompt prefixes per adapter: warm both on every prompt first, or the base (already
    # warm from the levels above) would skip prefill that the adapter pays for (RAG prompts are long).
    # Both answer at full length: an adapter trained on short answers must not look slower for
    # spending a larger share of its time in prefill.
    for model in (base, name):
        level(direct, "x", model, prompts, concurrency=8, n=len(prompts), max_tokens=1)
    for c in [c for c in opts.levels if c >= 8] or opts.levels:
        console.print(f"base vs adapter, concurrency {c}")
        for label, model in (("base", base), ("lora", name)):
            out[label][c] = level(
                direct, "x", model, prompts, concurrency=c, n=opts.requests_for(c), max_tokens=opts.max_tokens,
                full_length=True,
            )  # fmt: skip
    return out


def gateway_parts(
    ctx: Context, setup: BenchSetup, raw: list[list[dict]], opts: BenchOptions, adapter: ModelRecord | None
) -> dict[str, Any]:
    """The gateway with retrieval at every level, then the swap under load; the gateway stops on the way out."""
    gw_settings = ctx.settings.model_copy(update={"vllm": setup.vllm_settings})
    bench = Context(gw_settings, workspace=ctx.workspace, registry=setup.registry)
    limits = GatewayLimits(requests_per_minute=100_000, burst=10_000, max_concurrency=1024)
    app = build_gateway(bench, server=setup.server, limits=limits, store_path=setup.tmp / "gateway.sqlite")
    customer = app.state.store.create_key("customer", name="bench")[0]
    engineer = app.state.store.create_key("admin", name="bench")[0]
    gateway, _, url = serve_app(app)
    try:
        out: dict[str, Any] = {"gateway": {}}
        for c in opts.levels:
            console.print(f"gateway with retrieval, concurrency {c}")
            out["gateway"][c] = level(
                f"{url}/v1", customer, "helpline-support", raw, concurrency=c, n=opts.requests_for(c),
                max_tokens=opts.max_tokens,
            )  # fmt: skip
        if adapter is not None and "swap" not in opts.skip:
            console.print("adapter swap under load")
            out["swap_under_load"] = asyncio.run(_swap_through_gateway(url, customer, engineer, raw, adapter.name))
        return out
    finally:
        gateway.should_exit = True


async def _swap_through_gateway(url: str, customer: str, engineer: str, raw: list[list[dict]], adapter: str) -> dict:
    """:func:`_swap_under_load` with an admin client (engineer key) and a chat client (customer key)."""
    openai = require("openai", "serve")

    headers = {"Authorization": f"Bearer {engineer}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as admin,
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=customer, max_retries=0) as gw_client,
    ):
        return await _swap_under_load(gw_client, admin, raw, adapter, 48)


def run_bench(ctx: Context, opts: BenchOptions) -> dict[str, Any]:
    """Run every part not in ``opts.skip``; returns one JSON-able dict with the targets checked."""
    setup = set_up(ctx)
    prepared = prepare_prompts(setup.pipeline, sample_questions())
    verifier = setup.verifier
    out: dict[str, Any] = {
        "model": setup.base.name, "max_tokens": opts.max_tokens, "prompts": len(prepared.prompts),
        "requests_per_level": {c: opts.requests_for(c) for c in opts.levels},
        "overhead_prepare_ms_p50": round(statistics.median(prepared.prepare_ms), 2),
        "verifier": getattr(getattr(verifier, "detector", None), "name", None) if verifier else None,
    }  # fmt: skip
    if "transformers" not in opts.skip:
        console.print("transformers, sequential")
        out["transformers_sequential"] = transformers_sequential(
            setup.base.path, prepared.prompts, n=opts.transformers_requests, max_tokens=opts.max_tokens
        )
    adapter = None if "adapter" in opts.skip else bench_adapter(setup.registry, setup.base, setup.tmp)
    console.print(f"starting vLLM on port {setup.vllm_settings.port} (log {setup.tmp / 'vllm.log'})")
    setup.server.start()
    try:
        direct = setup.server.base_url
        level(direct, "x", setup.base.name, prepared.as_dicts, concurrency=2, n=2, max_tokens=8)  # warm-up
        out |= verify_overhead(setup, prepared, opts.max_tokens)
        if "vllm" not in opts.skip:
            out["vllm_direct"] = vllm_direct_levels(direct, setup.base.name, prepared.as_dicts, opts)
        if adapter is not None:
            out["adapter"] = adapter_vs_base(setup, adapter, prepared.as_dicts, opts)
        if "gateway" not in opts.skip:
            out |= gateway_parts(ctx, setup, prepared.raw, opts, adapter)
    finally:
        setup.server.stop()
        shutil.rmtree(setup.tmp, ignore_errors=True)
    out["targets"] = targets(out)
    return out


def targets(out: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, computed from what was measured (absent parts give None)."""
    t: dict[str, Any] = {}
    hf = out.get("transformers_sequential", {}).get("output_tokens_per_s")
    gw = out.get("gateway", {})
    if hf and 16 in gw:
        ratio = gw[16]["output_tokens_per_s"] / hf
        t["gateway_c16_vs_transformers_x"] = {"value": round(ratio, 2), "target": 10, "met": ratio >= 10}
    if 1 in gw:
        share = out.get("overhead_ms_p50", out["overhead_prepare_ms_p50"]) / 1000 / gw[1]["e2e_p50_s"]
        t["overhead_share_c1"] = {"value": round(share, 4), "target": 0.05, "met": share <= 0.05}
    ad = out.get("adapter", {})
    if ad.get("base"):
        c = max(ad["base"])
        ratio = ad["lora"][c]["output_tokens_per_s"] / ad["base"][c]["output_tokens_per_s"]
        t[f"adapter_vs_base_c{c}"] = {"value": round(ratio, 3), "target": 0.8, "met": ratio >= 0.8}
    if "swap_under_load" in out:
        lost = out["swap_under_load"]["lost_or_failed"]
        t["swap_lost_requests"] = {"value": lost, "target": 0, "met": lost == 0}
    return t
