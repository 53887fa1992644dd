"""The steps of an incremental sync, in the order that makes a killed sync recoverable.

For each changed document: ledger row ``pending`` (old and new chunk ids) → embed → upsert new chunks →
delete chunks no longer produced → ledger row ``ok``. For each removed document: ledger row ``deleting`` →
delete its chunks → drop the row. A later sync redoes every row not ``ok``; chunk ids are deterministic,
so nothing is duplicated and nothing already indexed is lost. After an embedder change every document is
re-embedded (those not being synced from their stored chunks), and only then is the new embedder recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from helpline.platform.registry import KBVersion
from helpline.platform.schemas import Chunk, Document
from helpline.retrieval.embedders.base import Embedder
from helpline.retrieval.ingest.chunking import content_hash, embedding_text
from helpline.retrieval.ingest.records import Record, RecordManager
from helpline.retrieval.stores.protocol import VectorStore


class Index(Protocol):
    """What a sync writes to: the knowledge base's store, embedder, ledger and chunker."""

    store: VectorStore
    embedder: Embedder
    records: RecordManager

    def chunk_documents(self, doc: Document) -> list[Chunk]: ...


@dataclass
class SyncReport:
    """What a sync changed."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # left as they were: their file could not be loaded
    unchanged: int = 0
    chunks_embedded: int = 0
    version: KBVersion | None = None

    def summary(self) -> dict:
        """The report as the CLI's `--json` and the admin API return it."""
        return {
            "added": self.added,
            "updated": self.updated,
            "deleted": self.deleted,
            "kept": self.kept,
            "unchanged": self.unchanged,
            "chunks_embedded": self.chunks_embedded,
            "version": self.version.id if self.version else None,
        }


def document_hash(doc: Document) -> str:
    """What decides whether a document changed: its title, access level and text."""
    return content_hash(f"{doc.title}\n{doc.access}\n{doc.text}")


#: Origins of a document (see ``records``): uploaded through the gateway, or added by hand.
UPLOAD = "upload"
ADDED = "added"
_EMBEDDER_KEY = "embedder"


def folder_origin(folder: Path) -> str:
    """The origin of documents a sync of ``folder`` brings."""
    return f"folder:{folder.resolve()}"


def from_folder(record: Record, folder: Path) -> bool:
    """Whether a sync of ``folder`` brought ``record`` (and so may delete it). A ledger from before
    origins says nothing: then a document whose source file lies in the folder is the folder's."""
    if record.origin:
        return record.origin == folder_origin(folder)
    if not record.source or record.source.startswith("upload:"):
        return False
    return Path(record.source).resolve().is_relative_to(folder.resolve())


def apply_sync(
    kb: Index,
    wanted: dict[str, Document],
    report: SyncReport,
    *,
    delete_missing: bool,
    keep: set[str] | None = None,
    origin: str | None = None,
) -> None:
    """Bring the store and the ledger to ``wanted`` (plus untouched documents unless ``delete_missing``,
    and the ``keep`` ones whatever it says). ``wanted`` documents are recorded as coming from ``origin``
    (None: a document keeps its recorded origin; a new one is ``added``)."""
    records = _reconcile(kb)
    # Vectors from another embedder cannot be searched with this one's queries: re-embed everything.
    reembed_all = bool(records) and kb.records.get_meta(_EMBEDDER_KEY) not in (None, kb.embedder.name)
    for doc_id, doc in wanted.items():
        record = records.get(doc_id)
        doc_hash = document_hash(doc)
        if record is not None and record.state == "ok" and record.doc_hash == doc_hash and not reembed_all:
            if origin is not None and record.origin != origin:
                kb.records.set_origin(doc_id, origin)
            report.unchanged += 1
            continue
        previous = _previous_hash(record)
        chunks = kb.chunk_documents(doc)
        new_ids = [c.chunk_id for c in chunks]
        old_ids = record.chunk_ids if record else []
        recorded = origin if origin is not None else (record.origin if record else ADDED)
        meta = {"title": doc.title, "source": doc.source, "access": doc.access, "origin": recorded}
        kb.records.begin(doc_id, doc_hash=doc_hash, previous_hash=previous, chunk_ids=old_ids + new_ids, meta=meta)
        _write_chunks(kb, chunks)
        kb.store.delete([cid for cid in old_ids if cid not in set(new_ids)])
        change = "added" if previous is None else "updated"
        kb.records.commit(doc_id, new_ids, change=change)
        getattr(report, change).append(doc_id)
        report.chunks_embedded += len(chunks)
    for doc_id, record in records.items():
        if doc_id in wanted or not (delete_missing or record.state == "deleting"):
            continue
        if keep and doc_id in keep and record.state != "deleting":
            continue
        kb.records.begin_delete(doc_id)
        kb.store.delete(record.chunk_ids)
        kb.records.forget(doc_id)
        report.deleted.append(doc_id)
    if reembed_all:
        others = {d for d, r in records.items() if d not in wanted and d not in report.deleted and r.state == "ok"}
        stored = [c for c in kb.store.chunks() if c.doc_id in others]
        _write_chunks(kb, stored)
        report.chunks_embedded += len(stored)
    kb.records.set_meta(_EMBEDDER_KEY, kb.embedder.name)  # last: a killed re-embedding is redone


def _previous_hash(record: Record | None) -> str | None:
    """The hash before this change; None means the document is new (also when a killed add is redone)."""
    if record is None:
        return None
    return record.doc_hash if record.state == "ok" else record.previous_hash


def _write_chunks(kb: Index, chunks: list[Chunk], batch: int = 256) -> None:
    for start in range(0, len(chunks), batch):
        part = chunks[start : start + batch]
        kb.store.upsert(part, kb.embedder.embed_documents([embedding_text(c) for c in part]))


def _reconcile(kb: Index) -> dict[str, Record]:
    """The ledger, after adopting a store built before the ledger existed and dropping orphan chunks."""
    records = kb.records.all()
    stored = kb.store.chunks()
    if not records and stored:
        kb.records.adopt(records_from_chunks(stored))
        return kb.records.all()
    known = {cid for r in records.values() for cid in r.chunk_ids}
    orphans = [c.chunk_id for c in stored if c.chunk_id not in known]
    kb.store.delete(orphans)
    return records


def records_from_chunks(chunks: list[Chunk]) -> list[Record]:
    """Ledger rows describing chunks already in a store (grouped by document)."""
    by_doc: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    return [
        Record(
            doc_id=doc_id,
            doc_hash=cs[0].content_hash,
            previous_hash=None,
            chunk_ids=sorted(c.chunk_id for c in cs),
            title=cs[0].title,
            source=cs[0].source,
            access=cs[0].access,
            state="ok",
            updated_at=0.0,
        )
        for doc_id, cs in by_doc.items()
    ]
