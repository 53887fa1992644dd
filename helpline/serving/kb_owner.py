"""A knowledge base written on one owner thread and searched on reader threads, so searches never wait for a sync.

The knowledge base keeps a SQLite ledger whose connection belongs to the thread that opened it, and a sync of a
large upload can embed for minutes. So:

- writes (``sync``, ``remove``, ``call``, ``close``) and the ledger's reads run one at a time on the owner
  thread that created the knowledge base;
- searches (and ``read``) run on reader threads. They touch the vector store, the embedder and the BM25 index,
  never the ledger: the knowledge base's searches do not reload the BM25 index themselves
  (``searches_refresh``); its owner reloads it. A sync publishes its new index in one assignment at its end, so a
  search meanwhile reads the old index or the new one; an index that another process saved (a gateway serving
  read-only beside the one that writes) is picked up on the owner thread soon after a search;
- both sides share the embedder, so its calls take turns (``TakingTurns``), a sync's in batches small enough
  that a query waits for at most one batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("helpline.retrieval")


class TakingTurns:
    """An embedder whose calls run one at a time (a sync's in batches of ``batch`` texts), whatever thread makes
    them: not every backend may be called from two threads at once (an OpenVINO model shares one inference
    request; a lazy embedder would load twice), and on a small machine one call already uses every core."""

    def __init__(self, inner: Any, *, batch: int = 32) -> None:
        self.inner = inner
        self.name = inner.name
        self.batch = batch
        self._turn = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            with self._turn:
                vectors.extend(self.inner.embed_documents(texts[start : start + self.batch]))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        with self._turn:
            return self.inner.embed_query(text)


class OwnedKB:
    """A ``KnowledgeBase`` created by and written on its own thread, searched on ``readers`` threads."""

    def __init__(self, factory: Callable[[], Any], *, readers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knowledge-base")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="knowledge-base-search")
        self._refresh_queued = threading.Event()
        self.kb = self._pool.submit(self._open, factory).result()

    @staticmethod
    def _open(factory: Callable[[], Any]) -> Any:
        """Create the knowledge base and load its BM25 index here, on the owner thread (the one ledger reader)."""
        kb = factory()
        kb.embedder = TakingTurns(kb.embedder)
        kb.searches_refresh = False
        kb.refresh()
        return kb

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the owner thread and wait for its result (exceptions propagate): for writes and
        anything that reads the ledger. It waits for the write in progress."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on a reader thread (a search, an embedding): it does not wait for a write in progress.
        ``fn`` must not touch the ledger."""
        return self._readers.submit(fn, *args, **kwargs).result()

    def search(self, query: str, **kwargs: Any) -> Any:
        try:
            return self.read(self.kb.search, query, **kwargs)
        finally:
            self._refresh_soon()

    def _refresh_soon(self) -> None:
        """Queue one reload of the BM25 index on the owner thread (a ``stat`` when nothing changed), unless one is
        queued already; the search that asked does not wait for it."""
        if self._refresh_queued.is_set():
            return
        self._refresh_queued.set()
        with contextlib.suppress(RuntimeError):  # closed
            self._pool.submit(self._refresh)

    def _refresh(self) -> None:
        self._refresh_queued.clear()
        try:
            self.kb.refresh()
        except Exception as e:  # searches go on with the index they have; the next one tries again
            log.warning("reloading the BM25 index failed: %s: %s", type(e).__name__, e)

    def sync(self, docs: Any, **kwargs: Any) -> Any:
        docs = list(docs)
        return self.call(self.kb.sync, docs, **kwargs)

    def sync_folder(self, folder: Any, **kwargs: Any) -> Any:
        return self.call(self.kb.sync_folder, folder, **kwargs)

    def sync_source(self, origin: str, docs: Any, **kwargs: Any) -> Any:
        return self.call(self.kb.sync_source, origin, docs, **kwargs)

    def remove(self, doc_ids: list[str]) -> Any:
        return self.call(self.kb.remove, doc_ids)

    def documents(self) -> Any:
        return self.call(self.kb.documents)

    @property
    def registry(self) -> Any:
        return self.kb.registry

    def close(self) -> None:
        """Close the knowledge base (a serving one lets other processes write its index again)."""
        close = getattr(self.kb, "close", None)
        if close is not None:
            self.call(close)
        self._pool.shutdown(wait=False)
        self._readers.shutdown(wait=False)
