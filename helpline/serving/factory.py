"""Build generators and the RAG pipeline from settings."""

from __future__ import annotations

import sys
from typing import Literal

from helpline.platform.errors import EngineError
from helpline.platform.registry import Registry
from helpline.platform.settings import Settings
from helpline.platform.workspace import Workspace
from helpline.serving.engines.protocol import Generator
from helpline.serving.rag import RAGPipeline

EngineChoice = Literal["auto", "vllm", "transformers"]


def vllm_url(settings: Settings) -> str:
    return f"http://{settings.vllm.host}:{settings.vllm.port}/v1"


def build_generator(settings: Settings, registry: Registry, *, engine: EngineChoice | None = None) -> Generator:
    """The configured engine for the configured chat model.

    ``vllm`` talks to the server that `helpline run` supervises; ``transformers`` loads the model
    in this process; ``auto`` uses the vLLM server when one is up and transformers otherwise.
    """
    from helpline.serving.engines.vllm_server import VLLMServer

    engine = engine or settings.engine
    record = registry.get_model(settings.chat_model)
    base = registry.get_model(record.base_model) if record.kind == "adapter" and record.base_model else record
    server = VLLMServer(model_path=base.path, served_name=base.name, settings=settings.vllm, log_path=None)  # type: ignore[arg-type]
    if engine in ("vllm", "auto") and server.is_ready():
        from helpline.serving.engines.openai_http import OpenAIGenerator

        return OpenAIGenerator(vllm_url(settings), record.name)
    if engine == "vllm":
        raise EngineError(
            f"no vLLM server is answering at {vllm_url(settings)}",
            hint="start the stack with `helpline run`, or pass --engine transformers",
        )
    if engine == "auto":
        print("note: no vLLM server is running; generating in-process with transformers", file=sys.stderr)
    from helpline.serving.engines.hf import TransformersGenerator

    adapter = record.path if record.kind == "adapter" else None
    return TransformersGenerator(base.path, adapter_path=adapter, name=record.name)


def build_pipeline(
    settings: Settings, workspace: Workspace, registry: Registry, *, generator: Generator
) -> RAGPipeline:
    """Knowledge base + generator + the support prompt, as the settings say."""
    from helpline.retrieval.factory import open_knowledge_base

    kb = open_knowledge_base(settings, workspace, registry)
    return RAGPipeline(
        search=kb.search,
        generator=generator,
        top_k=settings.retrieval.top_k,
        min_score=settings.retrieval.min_score,
        max_tokens=settings.generation.max_new_tokens,
        temperature=settings.generation.temperature,
    )
