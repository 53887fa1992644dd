"""The knowledge-base sources that are not a folder, read in one place for the CLI, the admin API and the scheduled
connectors: a help-centre export (``KIND:PATH``, ``exports.py``) or a website (``https://...``, ``crawl.py``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpline.platform.schemas import Document
from helpline.retrieval.ingest.crawl import crawl_origin, crawl_site
from helpline.retrieval.ingest.exports import KINDS, load_export, parse_source, source_origin


@dataclass
class SourceDocs:
    """What a source holds now: its documents, the origin a sync records them under (and may delete by), and for
    a website what the crawl fetched."""

    origin: str
    docs: list[Document]
    crawl: dict[str, Any] | None = None


def is_website(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def is_source(ref: str) -> bool:
    """A website or ``KIND:PATH`` with a known KIND (anything else is a folder)."""
    return is_website(ref) or ref.split(":", 1)[0] in KINDS


def read_source(ref: str, *, crawl_dir: Path, max_pages: int = 500, max_depth: int = 5) -> SourceDocs:
    """The documents of a website (crawled; its pages' validators kept in ``crawl_dir``, one file per start URL,
    so that unchanged pages are not fetched again) or of a help-centre export."""
    if is_website(ref):
        state = crawl_dir / f"{hashlib.sha256(ref.encode()).hexdigest()[:16]}.json"
        docs, crawled = crawl_site(ref, state_path=state, max_pages=max_pages, max_depth=max_depth)
        return SourceDocs(crawl_origin(ref), docs, crawled.__dict__)
    kind, path = parse_source(ref)
    return SourceDocs(source_origin(kind, path), load_export(kind, path))
