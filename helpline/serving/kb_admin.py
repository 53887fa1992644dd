"""Knowledge-base changes the gateway's admin routes make, through helpline.retrieval's APIs.

The gateway hands this an ``OwnedKB`` (see ``kb_owner``), so every knowledge-base method used here must
exist there too (a test checks). Uploads are recorded with origin ``upload``: a folder sync never
deletes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpline.platform.errors import NotFoundError
from helpline.platform.schemas import Document
from helpline.retrieval.ingest.sources import is_source, read_source
from helpline.retrieval.ingest.syncing import UPLOAD


class KBAdmin:
    """List, upsert, delete and folder-sync on a knowledge base (an ``OwnedKB`` in the gateway)."""

    def __init__(self, kb: Any) -> None:
        self.kb = kb

    def list_documents(self) -> list[dict[str, Any]]:
        fields = ("doc_id", "title", "access", "state", "origin")
        return [
            {**{f: getattr(r, f) for f in fields}, "chunks": len(r.chunk_ids)}
            for r in sorted(self.kb.documents(), key=lambda r: r.doc_id)
        ]

    def upsert(self, docs: list[Document]) -> dict[str, Any]:
        """Add new and changed documents as uploads; leave every other document alone."""
        return self.kb.sync(docs, delete_missing=False, origin=UPLOAD).summary()

    def delete(self, doc_id: str) -> dict[str, Any]:
        return self.kb.remove([doc_id]).summary()

    def sync_source(self, ref: str, *, crawl_state: Path) -> dict[str, Any]:
        """Mirror a help-centre export (``KIND:PATH``: zendesk, intercom, confluence, notion) or a website
        (``https://...``, crawled; its validators kept under ``crawl_state``) as `helpline kb sync` does; a folder
        otherwise."""
        if not is_source(ref):
            return self.sync_folder(ref)
        read = read_source(ref, crawl_dir=crawl_state)
        summary = {**self.kb.sync_source(read.origin, read.docs).summary(), "failed": []}
        return summary if read.crawl is None else {**summary, "crawl": read.crawl}

    def sync_folder(self, folder: str) -> dict[str, Any]:
        """Make the knowledge base mirror ``folder`` (as `helpline kb sync` does): documents that came
        from it follow it; uploads and other folders' documents stay."""
        path = Path(folder)
        if not path.is_dir():
            raise NotFoundError(f"{folder} is not a folder on the gateway's machine")
        report, failures = self.kb.sync_folder(path)
        summary = report.summary()
        summary["failed"] = [{"path": str(f.path), "reason": f.reason} for f in failures]
        return summary
