"""Build generators, the RAG pipeline and the whole gateway from settings.

The factory rule, the same in every ``factory`` module: a factory takes the :class:`Context` first and
what it is asked for as keyword arguments; ``open_<thing>`` returns a part over on-disk state that it keeps
and changes (the knowledge base), ``build_<thing>`` composes anything else. Here every factory is a
``build_``; ``vllm_url`` and ``gateway_db`` (addresses) take plain arguments.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import httpx

from helpline.answering.abstention import min_score_for, scoring_mode
from helpline.answering.extractive import EmbedTexts, ExtractiveReader
from helpline.answering.rag import RAGPipeline, Verifier
from helpline.answering.staff_answers import StaffAnswers
from helpline.engines.hf import TransformersGenerator
from helpline.engines.openai_http import OpenAIGenerator
from helpline.engines.protocol import Generator
from helpline.engines.vllm_external import ExternalVLLM
from helpline.engines.vllm_server import load_lora_adapter
from helpline.guard.selection import chosen_detector
from helpline.guard.verifier import DetectorVerifier
from helpline.platform.context import Context
from helpline.platform.errors import EngineError
from helpline.platform.lazy_imports import require
from helpline.platform.registry import Registry
from helpline.platform.settings import Settings
from helpline.platform.workspace import Workspace
from helpline.retrieval.factory import open_knowledge_base
from helpline.serving.gateway.app import create_app
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.conversations import staff_answer_changes
from helpline.serving.gateway.limits import Admission
from helpline.serving.gateway.shared_limits import SharedConcurrencyGate, SharedRateLimiter
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.kb_owner import OwnedKB
from helpline.serving.routing import ModelRouter, TransformersBackend, VLLMBackend

EngineChoice = Literal["auto", "vllm", "transformers"]


def vllm_url(settings: Settings) -> str:
    """The OpenAI base URL of the vLLM server: ``vllm.url`` when it runs elsewhere, else the supervised one's."""
    return f"{settings.vllm.root_url}/v1"


def gateway_db(workspace: Workspace) -> Path:
    """The gateway's keys, audit log and conversations live next to the registry."""
    return workspace.root / "gateway.sqlite"


def open_gateway_store(ctx: Context) -> GatewayStore:
    """The gateway's database (keys, audit log, conversations): PostgreSQL at ``database_url`` when it is set,
    else the SQLite file of this workspace."""
    return GatewayStore(gateway_db(ctx.workspace), url=ctx.settings.database_url)


def build_generator(ctx: Context, *, engine: EngineChoice | None = None) -> Generator:
    """The configured engine (``engine`` overrides ``settings.engine``) for the configured chat model.

    ``vllm`` talks to the server that `helpline run` supervises (an adapter of the base it serves is
    loaded into it on first use); ``transformers`` loads the model in this process; ``auto`` uses the
    vLLM server when one is up and serves the model's base, and transformers otherwise.
    """

    settings = ctx.settings
    engine = engine or settings.engine
    record = ctx.registry.chat_model(settings.chat_model)
    base = ctx.registry.base_of(record)

    name = VLLMBackend.served_name(record)
    served = _served_models(settings) if engine in ("vllm", "auto") else None
    if served is not None and name not in served and record.kind == "adapter" and base.name in served:
        # An adapter of the served base that no alias loaded yet (a new candidate): load it now.
        if settings.vllm.url is not None:  # named as the engine host mounts the workspace
            ExternalVLLM(served_name=base.name, settings=settings.vllm, workspace_root=ctx.workspace.root).load_lora(
                name, record.path
            )
        else:
            load_lora_adapter(settings.vllm.root_url, name, record.path)
        served.append(name)
    if served is not None and name in served:
        return OpenAIGenerator(vllm_url(settings), name, max_model_len=settings.vllm.max_model_len)
    why = "no vLLM server is answering" if served is None else f"the vLLM server serves {', '.join(served)}, not"
    if engine == "vllm":
        raise EngineError(
            f"{why} at {vllm_url(settings)}" if served is None else f"{why} {name!r} (at {vllm_url(settings)})",
            hint="start the stack with `helpline run` (for this model's base), or pass --engine transformers",
        )
    if engine == "auto":
        print(f"note: {why}{'' if served is None else ' ' + repr(name)}; generating in-process with transformers",
              file=sys.stderr)  # fmt: skip

    adapter = record.path if record.kind == "adapter" else None
    return TransformersGenerator(base.path, adapter_path=adapter, name=record.name)


def _served_models(settings: Settings) -> list[str] | None:
    """Model ids the configured vLLM server lists, or None when no server answers."""

    try:
        resp = httpx.get(f"{vllm_url(settings)}/models", timeout=2)
        return [m["id"] for m in resp.json()["data"]] if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def build_pipeline(
    ctx: Context, *, generator: Generator, kb: Any = None, verifier: Verifier | None = None,
    store: GatewayStore | None = None,
) -> RAGPipeline:
    """Knowledge base (the workspace's unless ``kb``) + ``generator`` + the support prompt, as the settings say;
    given the gateway's ``store``, staff corrections from it are served again (``build_staff_answers``)."""
    settings = ctx.settings
    if kb is None:
        kb = open_knowledge_base(ctx)
    extra: dict[str, Any] = {"verifier": verifier} if verifier is not None else {}
    extra["reader"] = _answer_reader(settings, kb)
    if scoring_mode(settings.retrieval.mode) == "dense" and settings.retrieval.mode != "dense":
        extra["relevance"] = "dense"
    if store is not None:
        extra["staff_answers"] = build_staff_answers(ctx, kb=kb, store=store)
    return RAGPipeline(
        search=kb.search,
        generator=generator,
        top_k=settings.retrieval.top_k,
        min_score=min_score_for(settings, ctx.workspace),
        max_tokens=settings.generation.max_new_tokens,
        temperature=settings.generation.temperature,
        **extra,
    )


def _answer_reader(settings: Settings, kb: Any) -> ExtractiveReader | None:
    """The extractive reader over the knowledge base's embedder (None when ``answers.fallback`` is off).
    An owned knowledge base embeds on its reader threads, as its searches do."""
    a = settings.answers
    if not a.fallback:
        return None
    embed = _kb_embed(kb)
    if embed is None:
        return ExtractiveReader(min_score=a.min_quote_score)
    return ExtractiveReader(embed=embed, min_score=a.min_quote_score)


def _kb_embed(kb: Any) -> EmbedTexts | None:
    """The knowledge base's embedder as a function of texts (None when it has none). An owned knowledge base
    embeds on its reader threads, as its searches do."""
    owner = getattr(kb, "read", None)
    embedder = getattr(getattr(kb, "kb", kb), "embedder", None)
    if embedder is None:
        return None
    return (lambda texts: owner(embedder.embed_documents, texts)) if owner else embedder.embed_documents


def build_staff_answers(ctx: Context, *, kb: Any, store: GatewayStore) -> StaffAnswers | None:
    """Staff corrections from ``store`` served again to questions asked alike (None when ``answers.staff_answers``
    is off or the knowledge base has no embedder)."""
    embed = _kb_embed(kb)
    if not ctx.settings.answers.staff_answers or embed is None:
        return None
    return StaffAnswers(
        embed, lambda since: staff_answer_changes(store, since),
        min_similarity=ctx.settings.answers.staff_answer_similarity,
    )  # fmt: skip


def build_gateway(
    ctx: Context,
    *,
    server: Any = None,
    engine: EngineChoice = "vllm",
    limits: Any = None,
    store_path: Path | None = None,
) -> Any:
    """The gateway app over the real knowledge base and the vLLM server (or in-process transformers)."""

    settings, registry = ctx.settings, ctx.registry
    kb = OwnedKB(lambda: open_knowledge_base(ctx, serving=True))  # holds the index while it serves
    if engine == "vllm":
        base = server.served_name if server is not None else _base_name(settings, registry)
        backend: Any = VLLMBackend(
            base_url=vllm_url(settings), base_model=base, server=server, max_model_len=settings.vllm.max_model_len
        )
    else:
        backend = TransformersBackend(registry)
    router = ModelRouter(registry, backend)
    default = router.resolve("helpline-support", conversation_id="startup").generator
    store_ = GatewayStore(store_path) if store_path is not None else open_gateway_store(ctx)
    pipeline = build_pipeline(ctx, generator=default, kb=kb, verifier=build_verifier(ctx), store=store_)
    limits = limits or settings.gateway.limits
    return create_app(
        pipeline=pipeline,
        router=router,
        store=store_,
        kb=kb,
        limits=limits,
        readiness=build_readiness_checks(ctx, kb=kb, engine=engine),
        retention_days=settings.gateway.retention_days,
        admission=build_admission(settings, limits=limits),
        job_runner=settings.gateway.job_runner,
    )


def build_admission(settings: Settings, *, limits: GatewayLimits) -> Admission | None:
    """Rate limits and the concurrency cap shared by every replica through ``redis_url``; None (each gateway its
    own) without it. A chat holds its slot at most as long as it can run: the lease expires after that."""
    if settings.redis_url is None:
        return None
    lease_s = limits.retrieval_timeout_s + 2 * limits.upstream_timeout_s
    return Admission(
        rate=SharedRateLimiter(settings.redis_url, limits.requests_per_minute, limits.burst),
        gate=SharedConcurrencyGate(settings.redis_url, limits.max_concurrency, limits.retry_after_s, lease_s=lease_s),
    )


def build_verifier(ctx: Context) -> Verifier | None:
    """The gateway's answer check from ``gateway.detector`` (auto: helpline-detector when registered)."""

    name = chosen_detector(ctx.registry, ctx.settings.gateway.detector)
    return None if name is None else DetectorVerifier.from_registry(ctx.registry, name)


def _base_name(settings: Settings, registry: Registry) -> str:
    """The base an external vLLM server must serve: as the adapter names it (that base need not be registered)."""
    record = registry.chat_model(settings.chat_model)
    return record.base_model if record.kind == "adapter" and record.base_model else record.name


def build_readiness_checks(ctx: Context, *, kb: Any, engine: EngineChoice) -> Any:
    """An async callable reporting engine, index, embedder and storage health for `GET /ready`."""
    require("anyio.to_thread", "serve")
    anyio = require("anyio", "serve")

    settings = ctx.settings

    async def checks() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if engine == "vllm":
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    r = await client.get(f"{settings.vllm.root_url}/health")
                out["engine"] = {"ok": r.status_code == 200, "kind": "vllm"}
            except httpx.HTTPError as e:
                out["engine"] = {"ok": False, "kind": "vllm", "error": type(e).__name__}
        else:
            out["engine"] = {"ok": True, "kind": "transformers"}
        try:
            store = kb.kb.store
            count = await anyio.to_thread.run_sync(
                lambda: kb.read(lambda: store.count() if hasattr(store, "count") else len(store.chunks()))
            )
            out["index"] = {"ok": count > 0, "chunks": count}
        except Exception as e:  # a broken index must show up as not ready, whatever broke
            out["index"] = {"ok": False, "error": _not_ready(e)}
        try:
            embedder = kb.kb.embedder
            vector = await anyio.to_thread.run_sync(lambda: kb.read(embedder.embed_query, "ready?"))
            out["embedder"] = {"ok": len(vector) > 0, "name": embedder.name}
        except Exception as e:
            out["embedder"] = {"ok": False, "error": _not_ready(e)}
        out["storage"] = await anyio.to_thread.run_sync(storage_check, ctx.workspace.root)
        return out

    return checks


def _not_ready(exc: Exception) -> str:
    """What /ready (which answers without a key) shows of a failed check: the kind of error; its text, which
    can name paths and addresses, goes to the log."""
    logging.getLogger("helpline.gateway").warning("readiness check failed: %s: %s", type(exc).__name__, exc)
    return type(exc).__name__


def storage_check(root: Path) -> dict[str, Any]:
    """Can the workspace still be written? A small file is written, synced and removed: a full disk (every
    write, even a key check's, fails then) makes the gateway not ready rather than failing each request."""
    probe = root / ".ready-probe"
    free_mb = round(shutil.disk_usage(root).free / 2**20, 1)
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        return {"ok": True, "free_mb": free_mb}
    except OSError as e:
        return {"ok": False, "free_mb": free_mb, "error": e.strerror or type(e).__name__}
    finally:
        probe.unlink(missing_ok=True)
