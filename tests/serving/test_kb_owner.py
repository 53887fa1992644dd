"""Retrieval under load: searches do not wait for a sync, a stuck one times out with 503, and key checks still answer.

No timed assertions: a test that would hang on a regression waits generously, then fails saying what hung.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from helpline.answering.rag import RAGPipeline
from helpline.platform.registry import Registry
from helpline.platform.schemas import Chunk, Document
from helpline.retrieval.ingest.records import RecordManager
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.retrieval.stores.chroma import ChromaStore
from helpline.serving.gateway.app import create_app
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.gateway.service import RETRIEVAL_THREADS
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.kb_owner import OwnedKB, TakingTurns
from helpline.serving.routing import ModelRouter
from helpline.testing import FakeEmbedder, FakeGenerator, InMemoryStore
from helpline.testing.serving import DOCS, FakeBackend

VOUCHERS = Document(doc_id="vouchers", title="Vouchers", text="Gift vouchers last one year from the day of purchase.")
GENEROUS_S = 30  # how long a regression may hang before the test fails (passing runs take milliseconds)


class HeldStore(InMemoryStore):
    """A vector store whose writes wait for ``release`` once ``hold`` is set: a sync that takes its time."""

    def __init__(self) -> None:
        super().__init__()
        self.hold, self.writing, self.release = threading.Event(), threading.Event(), threading.Event()

    def upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        if self.hold.is_set():
            self.writing.set()
            self.release.wait(2 * GENEROUS_S)
        super().upsert(chunks, vectors)


class HeldSearch:
    """A knowledge-base search that holds every caller until ``release`` is set, counting those it holds."""

    def __init__(self) -> None:
        self.held = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, query: str, *, k: int, role: str, history: list[str] | None = None) -> list:
        with self._lock:
            self.held += 1
        self.release.wait(2 * GENEROUS_S)
        return []


def _kb(tmp_path: Path, store: Any) -> KnowledgeBase:
    return KnowledgeBase(
        store=store,
        embedder=FakeEmbedder(),
        chunk_size=300,
        chunk_overlap=20,
        records=RecordManager(tmp_path / "records.sqlite"),  # bound to the thread that opens it, as in serving
        index_dir=tmp_path / "bm25",
    )


def _within(seconds: float, fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` in a thread; fails naming ``what`` if it has not returned after ``seconds``."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"{what} did not return within {seconds} s"
    return out[0]


def _app(tmp_path: Path, search: Callable[..., list], limits: GatewayLimits) -> tuple[Any, str]:
    """The gateway over ``search`` and fakes; returns it with a customer key."""
    registry = Registry(tmp_path / "registry.sqlite")
    registry.register_model("fake-base", kind="base", path=tmp_path / "base")
    registry.set_alias("production", "fake-base", actor="test")
    store = GatewayStore(tmp_path / "gateway.sqlite")
    key = store.create_key("customer", name="test")[0]
    pipeline = RAGPipeline(search=search, generator=FakeGenerator(), top_k=2)
    return create_app(pipeline=pipeline, router=ModelRouter(registry, FakeBackend()), store=store, limits=limits), key


def _chat(key: str) -> dict:
    body = {"model": "helpline-support", "messages": [{"role": "user", "content": "Where is my parcel?"}]}
    return {"json": body, "headers": {"Authorization": f"Bearer {key}"}}


def test_a_search_during_a_long_sync_answers_from_the_index_before_it(tmp_path: Path) -> None:
    store = HeldStore()
    owned = OwnedKB(lambda: _kb(tmp_path, store))
    owned.sync(DOCS)
    store.hold.set()
    upload = threading.Thread(target=lambda: owned.sync([VOUCHERS], delete_missing=False), daemon=True)
    upload.start()
    try:
        assert store.writing.wait(GENEROUS_S), "the upload never reached the store"
        hits = _within(GENEROUS_S, lambda: owned.search("How do I return an item?", k=1), "a search during a sync")
        assert hits[0].chunk.doc_id == "returns"
    finally:
        store.release.set()
    upload.join(GENEROUS_S)
    assert owned.search("How long do gift vouchers last?", k=1)[0].chunk.doc_id == "vouchers"


def test_an_index_another_process_saved_is_searched_once_the_owner_reloaded_it(tmp_path: Path) -> None:
    """A gateway serving read-only beside the one that writes: its searches never read the ledger, its owner
    thread reloads the index the writer saved."""
    store = InMemoryStore()
    owned = OwnedKB(lambda: _kb(tmp_path, store))
    owned.sync(DOCS)
    _kb(tmp_path, store).sync([VOUCHERS], delete_missing=False)  # the other process (same files and store)
    owned.search("gift vouchers", k=1, mode="bm25")  # notices the saved index; the owner reloads it after
    owned.call(lambda: None)  # the owner thread has run what was queued before
    assert owned.search("gift vouchers", k=1, mode="bm25")[0].chunk.doc_id == "vouchers"


class VanishingRows:
    """A Chroma collection whose query meets a row that a sync on another thread deleted before its metadata was read
    (Chroma then returns the id with no document and no metadata)."""

    def count(self) -> int:
        return 2

    def query(self, **_: object) -> dict:
        meta = {"doc_id": "returns", "title": "Returning an item", "access": "public"}
        return {"ids": [["returns#0", "gone#0"]], "documents": [["Print the label.", None]],
                "metadatas": [[meta, None]], "distances": [[0.1, 0.2]]}  # fmt: skip


class OneCollection:
    def get_or_create_collection(self, *_: object, **__: object) -> VanishingRows:
        return VanishingRows()


def test_a_chroma_row_deleted_while_a_search_reads_it_is_left_out() -> None:
    hits = ChromaStore(OneCollection(), "kb").query([1.0], k=2)
    assert [h.chunk.chunk_id for h in hits] == ["returns#0"]


@pytest.mark.integration  # a stress run on embedded Chroma (no model): a few seconds of both cores
def test_searches_on_embedded_chroma_while_the_owner_syncs_and_deletes_all_succeed(tmp_path: Path) -> None:
    store = ChromaStore.embedded(tmp_path / "chroma", "helpline-kb")
    owned = OwnedKB(lambda: _kb(tmp_path, store))
    topics = [Document(doc_id=f"d{i}", title=f"Topic {i}", text=f"topic{i} shipping refund " * 40) for i in range(50)]
    owned.sync(topics)
    failures: list[str] = []
    done = threading.Event()

    def search() -> None:
        while not done.is_set():
            try:
                owned.search("shipping refund topic3", k=3)
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")

    searchers = [threading.Thread(target=search, daemon=True) for _ in range(3)]
    for t in searchers:
        t.start()
    try:
        extra = [Document(doc_id=f"e{i}", title=f"Extra {i}", text=f"extra{i} gift vouchers " * 60) for i in range(200)]
        owned.sync(extra, delete_missing=False)
        owned.remove([f"d{i}" for i in range(25)])
    finally:
        done.set()
        for t in searchers:
            t.join(GENEROUS_S)
    assert failures == []
    assert owned.search("extra7 gift vouchers", k=1)[0].chunk.doc_id == "e7"


def test_embedding_takes_turns_in_small_batches() -> None:
    inner = FakeEmbedder()
    texts = [f"text {i}" for i in range(70)]
    assert TakingTurns(inner, batch=32).embed_documents(texts) == FakeEmbedder().embed_documents(texts)
    assert [len(c) for c in inner.calls] == [32, 32, 6]  # a query waits for one batch, not the whole sync


def test_a_search_slower_than_the_retrieval_timeout_gets_503_with_retry_after(tmp_path: Path) -> None:
    held = HeldSearch()
    app, key = _app(tmp_path, held, GatewayLimits(retrieval_timeout_s=0.2, retry_after_s=3))

    async def chat() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            return await client.post("/v1/chat/completions", **_chat(key))

    try:
        r = asyncio.run(chat())
    finally:
        held.release.set()
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "3"
    assert "did not finish within 0.2 s" in r.json()["error"]["message"]


def test_a_bad_key_is_refused_while_retrieval_holds_every_thread(tmp_path: Path) -> None:
    """Requests waiting for a stuck knowledge base must not hold the worker threads the key check runs on."""
    held = HeldSearch()
    app, key = _app(tmp_path, held, GatewayLimits(retrieval_timeout_s=4 * GENEROUS_S))

    async def scenario() -> int:
        # As many worker threads as retrieval has: once every retrieval thread waits, so would every worker
        # thread if retrieval ran on them.
        anyio.to_thread.current_default_thread_limiter().total_tokens = RETRIEVAL_THREADS
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://gateway")
        async with client, anyio.create_task_group() as chats:
            for _ in range(RETRIEVAL_THREADS + 2):
                chats.start_soon(lambda: client.post("/v1/chat/completions", **_chat(key)))
            try:
                with anyio.fail_after(GENEROUS_S):
                    while held.held < RETRIEVAL_THREADS:
                        await anyio.sleep(0.01)
                with anyio.move_on_after(GENEROUS_S):
                    refused = await client.get("/console/whoami", headers={"Authorization": "Bearer wrong"})
                    return refused.status_code
                raise AssertionError("a key check waited while retrieval held every thread")
            finally:
                held.release.set()

    assert asyncio.run(scenario()) == 401
