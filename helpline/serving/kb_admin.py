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
        return [
            {"doc_id": r.doc_id, "title": r.title, "access": r.access, "chunks": len(r.chunk_ids), "state": r.state}
            for r in sorted(self.kb.documents(), key=lambda r: r.doc_id)
        ]

    def upsert(self, docs: list[Document]) -> dict[str, Any]:
        """Add new and changed documents; leave every other document alone."""
        return self.kb.sync(docs, delete_missing=False).summary()

    def delete(self, doc_id: str) -> dict[str, Any]:
        return self.kb.remove([doc_id]).summary()

    def sync_folder(self, folder: str) -> dict[str, Any]:
        """Make the knowledge base mirror ``folder`` (as `helpline kb sync` does)."""
        path = Path(folder)
        if not path.is_dir():
            raise NotFoundError(f"{folder} is not a folder on the gateway's machine")
        report, failures = self.kb.sync_folder(path)
        summary = report.summary()
        summary["failed"] = [{"path": str(f.path), "reason": f.reason} for f in failures]
        return summary

