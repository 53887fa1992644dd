"""Run every knowledge-base call on the one thread that created it.

The knowledge base keeps a SQLite ledger whose connection belongs to the thread that opened it,
while the gateway calls retrieval from many worker threads. One owner thread serializes those
calls; retrieval is short and CPU-bound (the GIL serializes it anyway), so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class OwnedKB:
    """A ``KnowledgeBase`` created by, and only ever used on, its own thread."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knowledge-base")
        self.kb = self._pool.submit(factory).result()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the owner thread and wait for its result (exceptions propagate)."""
        return self._pool.submit(fn, *args, **kwargs).result()

    def search(self, query: str, **kwargs: Any) -> Any:
        return self.call(self.kb.search, query, **kwargs)

    def sync(self, docs: Any, **kwargs: Any) -> Any:
        docs = list(docs)
        return self.call(self.kb.sync, docs, **kwargs)

    def sync_folder(self, folder: Any, **kwargs: Any) -> Any:
        return self.call(self.kb.sync_folder, folder, **kwargs)

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
