"""Build the knowledge base from settings (the one place that wires store, embedder and indexes).

The factory rule, the same in every ``factory`` module: a factory takes the :class:`Context` first and
what it is asked for as keyword arguments; ``open_<thing>`` returns a part over on-disk state that it keeps
and changes (the knowledge base: its Chroma collection, ledger and BM25 index), ``build_<thing>`` composes
anything else (an embedder, a generator, a pipeline, the gateway). Helpers that are not factories take
plain arguments: ``index_paths``, ``index_lock_path`` and ``chroma_server_for`` (where things are) and
``scratch_knowledge_base`` (a throwaway index outside the workspace).

The workspace's knowledge base is opened with its writer lock (``index_lock``): the gateway holds it while
it serves (``serving=True``), and another process may then read the index but not write it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, WorkspaceNotReadyError
from helpline.platform.settings import Settings
from helpline.platform.workspace import Workspace
from helpline.retrieval import SAMPLE_KB
from helpline.retrieval.embedders.base import Embedder, LazyEmbedder, SentenceTransformerEmbedder
from helpline.retrieval.embedders.onnx import OnnxEmbedder, export_int8
from helpline.retrieval.embedders.openvino import OpenVinoEmbedder, export_openvino_int8
from helpline.retrieval.index_lock import IndexLock
from helpline.retrieval.ingest.loaders import sample_texts
from helpline.retrieval.ingest.records import RecordManager
from helpline.retrieval.knowledge_base import KnowledgeBase, SearchOptions
from helpline.retrieval.stores.chroma import ChromaStore
from helpline.retrieval.stores.chroma_server import ChromaServer

log = logging.getLogger("helpline.retrieval")

Backend = str  # one of BACKENDS
BACKENDS = ("torch", "onnx-int8", "openvino-int8")
FAST_BACKENDS = BACKENDS[1:]


def build_embedder(ctx: Context, *, backend: Backend = "") -> Embedder:
    """The configured embedder from the registry: torch fp32, or an int8 export (ONNX Runtime, OpenVINO);
    ``backend`` overrides ``retrieval.embedder_backend``. It loads on first use."""
    settings, workspace = ctx.settings, ctx.workspace
    record = ctx.registry.get_model(settings.embedder)
    if record.kind != "embedder":
        raise WorkspaceNotReadyError(f"{settings.embedder!r} is a {record.kind}, not an embedder")
    backend = backend or settings.retrieval.embedder_backend
    if backend not in BACKENDS:
        raise ConfigError(f"unknown embedder backend {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    name = record.name if backend == "torch" else f"{record.name}+{backend}"

    def load() -> Embedder:
        if backend == "openvino-int8":
            folder = export_openvino_int8(
                record.path, workspace.models / f"{record.name}-openvino-int8", texts=calibration_texts()
            )
            return OpenVinoEmbedder(folder, name=name)
        if backend == "onnx-int8":
            folder = export_int8(record.path, workspace.models / f"{record.name}-onnx-int8")
            return OnnxEmbedder(folder, name=name)

        return SentenceTransformerEmbedder(record.path, name=record.name)

    return LazyEmbedder(name, load)


def calibration_texts() -> list[str]:
    """What int8 exports calibrate on: the bundled sample knowledge base's chunks, as they are embedded."""
    return sample_texts(SAMPLE_KB, chunk_size=1000, chunk_overlap=100)[1]


def index_paths(settings: Settings, workspace: Workspace) -> tuple[Path, Path]:
    """(ledger database, BM25 folder) for the configured collection."""
    r = settings.retrieval
    where = "server" if r.store == "server" else "embedded"
    base = workspace.indexes / f"{r.collection}-{where}"
    return base / "records.sqlite", base / "bm25"


def index_lock_path(settings: Settings, workspace: Workspace) -> Path:
    """The writer lock of the configured index. Embedded, one lock covers the workspace's Chroma folder (every
    collection shares its files) and the ledgers beside it. With a Chroma server, the server serializes
    its own writes, but the ledger and BM25 files are still this machine's: the lock is the collection's."""
    if settings.retrieval.store == "server":
        return index_paths(settings, workspace)[0].parent / "writer.lock"
    return workspace.indexes / "embedded-writer.lock"


def chroma_server_for(settings: Settings, workspace: Workspace):  # -> ChromaServer | None
    """The `chroma run` process that `retrieval.store: server` needs, or None.

    None when the store is embedded, or when a server already answers at the configured address (one
    started by hand or by another `helpline run`). Otherwise an unstarted server on loopback that keeps
    its data in the workspace (``indexes/chroma-server``); the caller starts and stops it.
    """
    r = settings.retrieval
    if r.store != "server":
        return None
    server = ChromaServer(
        workspace.indexes / "chroma-server", port=r.chroma_port, host=r.chroma_host, log=workspace.logs / "chroma.log"
    )
    if server.ready():
        return None
    if r.chroma_host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"no Chroma server answers at {r.chroma_host}:{r.chroma_port}",
            hint="start it on that host, or set retrieval.chroma_host to 127.0.0.1 to let helpline start one",
        )
    return server


def open_knowledge_base(ctx: Context, *, embedder: Embedder | None = None, serving: bool = False) -> KnowledgeBase:
    """The configured knowledge base: MiniLM (or the configured embedder) over Chroma, plus BM25.

    ``serving``: this process serves it (the gateway) and holds its writer lock until ``close`` or exit,
    after waiting for a `kb sync` that writes it (read-only when another gateway already serves it).
    Otherwise each write takes the lock for its duration, and is refused while a gateway serves the index.
    """
    settings, workspace = ctx.settings, ctx.workspace
    embedder = embedder or build_embedder(ctx)
    r = settings.retrieval
    if r.store == "server":
        store = ChromaStore.server(r.chroma_host, r.chroma_port, r.collection)
    else:
        store = ChromaStore.embedded(workspace.indexes / "chroma", r.collection)
    records_path, bm25_dir = index_paths(settings, workspace)
    lock = IndexLock(index_lock_path(settings, workspace))
    if serving and not lock.serve():
        log.warning("another gateway serves this knowledge base: this one serves it read-only (no admin KB changes)")
    return KnowledgeBase(
        store=store,
        embedder=embedder,
        chunk_size=r.chunk_size,
        chunk_overlap=r.chunk_overlap,
        registry=ctx.registry,
        records=RecordManager(records_path),
        index_dir=bm25_dir,
        options=SearchOptions(mode=r.mode),
        lock=lock,
    )


def scratch_knowledge_base(
    store_dir: str | Path,
    embedder: Embedder,
    *,
    settings: Settings | None = None,
    options: SearchOptions | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    name: str = "scratch",
) -> KnowledgeBase:
    """A throwaway knowledge base for evaluations and benches: embedded Chroma under ``store_dir``, its
    ledger and BM25 index in memory, nothing registered. Chunking and search mode are the ``settings``'
    (the defaults without them) unless given."""
    r = settings.retrieval if settings is not None else None
    return KnowledgeBase(
        store=ChromaStore.embedded(store_dir, name),
        embedder=embedder,
        chunk_size=chunk_size or (r.chunk_size if r else 900),
        chunk_overlap=chunk_overlap if chunk_overlap is not None else (r.chunk_overlap if r else 120),
        records=RecordManager(":memory:"),
        options=options or (SearchOptions(mode=r.mode) if r else None),
    )
