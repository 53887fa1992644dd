"""The knowledge base: sync documents into a vector store and search them by role."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from helpline.platform.registry import KBVersion, Registry
from helpline.platform.schemas import Access, Chunk, Document, ScoredChunk
from helpline.retrieval.chunking import chunk_document, content_hash, embedding_text
from helpline.retrieval.embedders import Embedder
from helpline.retrieval.stores.protocol import VectorStore

#: What each caller may see. Customers never retrieve internal chunks.
VISIBLE: dict[str, tuple[Access, ...]] = {
    "customer": ("public",),
    "staff": ("public", "internal"),
}


@dataclass
class SyncReport:
    """What a sync changed."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    chunks_embedded: int = 0
    version: KBVersion | None = None


class KnowledgeBase:
    """Documents chunked, embedded and stored; searched with access filters."""

    def __init__(
        self,
        *,
        store: VectorStore,
        embedder: Embedder,
        chunk_size: int = 900,
        chunk_overlap: int = 120,
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.registry = registry

    def sync(self, docs: Iterable[Document], *, delete_missing: bool = True) -> SyncReport:
        """Make the store hold exactly ``docs``: embed new and changed ones, delete removed ones."""
        report = SyncReport()
        stored = _doc_hashes(self.store.chunks())
        wanted = {d.doc_id: d for d in docs}
        for doc_id, doc in wanted.items():
            doc_hash = _document_hash(doc)
            if stored.get(doc_id, (None, []))[0] == doc_hash:
                report.unchanged += 1
                continue
            chunks = chunk_document(doc, chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)
            for c in chunks:  # the document hash on every chunk tells the next sync what changed
                c.content_hash = doc_hash
            vectors = self.embedder.embed_documents([embedding_text(c) for c in chunks])
            new_ids = {c.chunk_id for c in chunks}
            self.store.upsert(chunks, vectors)
            old_ids = stored.get(doc_id, (None, []))[1]
            self.store.delete([cid for cid in old_ids if cid not in new_ids])
            report.chunks_embedded += len(chunks)
            (report.updated if doc_id in stored else report.added).append(doc_id)
        if delete_missing:
            for doc_id, (_, chunk_ids) in stored.items():
                if doc_id not in wanted:
                    self.store.delete(chunk_ids)
                    report.deleted.append(doc_id)
        if self.registry is not None and (report.added or report.updated or report.deleted):
            report.version = self.registry.record_kb_version(
                added=len(report.added),
                updated=len(report.updated),
                deleted=len(report.deleted),
                content_hash=self.fingerprint(),
            )
        return report

    def search(self, query: str, *, k: int = 4, role: str = "customer") -> list[ScoredChunk]:
        """The ``k`` most relevant chunks that ``role`` may see."""
        access = VISIBLE.get(role, ("public",))
        where = {"access": access[0]} if len(access) == 1 else {"access": {"$in": list(access)}}
        return self.store.query(self.embedder.embed_query(query), k=k, where=where)

    def fingerprint(self) -> str:
        """A hash of everything stored, identifying this knowledge-base version."""
        hashes = sorted(f"{c.chunk_id}:{c.content_hash}" for c in self.store.chunks())
        return content_hash("\n".join(hashes))


def _document_hash(doc: Document) -> str:
    return content_hash(f"{doc.title}\n{doc.access}\n{doc.text}")


def _doc_hashes(chunks: list[Chunk]) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for c in chunks:
        _, ids = out.setdefault(c.doc_id, (c.content_hash, []))
        ids.append(c.chunk_id)
    return out
