"""Knowledge-base changes the gateway's admin routes make, through helpline.retrieval's APIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpline.platform.errors import NotFoundError
from helpline.platform.schemas import Document


class KBAdmin:
    """List, upsert, delete and folder-sync on a ``KnowledgeBase``."""

    def __init__(self, kb: Any) -> None:
        self.kb = kb

    def list_documents(self) -> list[dict[str, Any]]:
        docs: dict[str, dict[str, Any]] = {}
        for c in self.kb.store.chunks():
            entry = docs.setdefault(c.doc_id, {"doc_id": c.doc_id, "title": c.title, "access": c.access, "chunks": 0})
            entry["chunks"] += 1
        return sorted(docs.values(), key=lambda d: d["doc_id"])

    def upsert(self, docs: list[Document]) -> dict[str, Any]:
        """Add new and changed documents; leave every other document alone."""
        return _summary(self.kb.sync(docs, delete_missing=False))

    def delete(self, doc_id: str) -> dict[str, Any]:
        ids = [c.chunk_id for c in self.kb.store.chunks() if c.doc_id == doc_id]
        if not ids:
            raise NotFoundError(f"no document {doc_id!r} in the knowledge base", hint="GET /admin/kb/documents")
        self.kb.store.delete(ids)
        version = None
        if self.kb.registry is not None:
            version = self.kb.registry.record_kb_version(
                added=0, updated=0, deleted=1, content_hash=self.kb.fingerprint(), note=f"deleted {doc_id}"
            ).id
        return {"deleted": [doc_id], "chunks": len(ids), "version": version}

    def sync_folder(self, folder: str) -> dict[str, Any]:
        """Make the knowledge base mirror ``folder`` (as `helpline kb sync` does)."""
        from helpline.retrieval.loaders import load_directory

        path = Path(folder)
        if not path.is_dir():
            raise NotFoundError(f"{folder} is not a folder on the gateway's machine")
        docs, failures = load_directory(path)
        summary = _summary(self.kb.sync(docs))
        summary["failed"] = [{"path": str(f.path), "reason": f.reason} for f in failures]
        return summary


def _summary(report: Any) -> dict[str, Any]:
    return {
        "added": report.added,
        "updated": report.updated,
        "deleted": report.deleted,
        "unchanged": report.unchanged,
        "chunks_embedded": report.chunks_embedded,
        "version": report.version.id if report.version else None,
    }
