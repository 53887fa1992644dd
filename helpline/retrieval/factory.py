"""Build the knowledge base from settings (the one place that wires store and embedder)."""

from __future__ import annotations

from helpline.platform.errors import WorkspaceNotReadyError
from helpline.platform.registry import Registry
from helpline.platform.settings import Settings
from helpline.platform.workspace import Workspace
from helpline.retrieval.embedders import SentenceTransformerEmbedder
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.retrieval.stores.chroma import ChromaStore


def open_knowledge_base(settings: Settings, workspace: Workspace, registry: Registry) -> KnowledgeBase:
    """The configured knowledge base: MiniLM (or the configured embedder) over Chroma."""
    record = registry.get_model(settings.embedder)
    if record.kind != "embedder":
        raise WorkspaceNotReadyError(f"{settings.embedder!r} is a {record.kind}, not an embedder")
    embedder = SentenceTransformerEmbedder(record.path, name=record.name)
    r = settings.retrieval
    if r.store == "server":
        store = ChromaStore.server(r.chroma_host, r.chroma_port, r.collection)
    else:
        store = ChromaStore.embedded(workspace.indexes / "chroma", r.collection)
    return KnowledgeBase(
        store=store,
        embedder=embedder,
        chunk_size=r.chunk_size,
        chunk_overlap=r.chunk_overlap,
        registry=registry,
    )
