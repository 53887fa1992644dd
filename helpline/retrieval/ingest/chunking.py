"""Structure-aware chunking: split on Markdown headings, then by size, keeping the heading path."""

from __future__ import annotations

import hashlib

from helpline.platform.lazy_imports import require
from helpline.platform.schemas import Chunk, Document

_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


def content_hash(text: str) -> str:
    """Stable hash of a text (used to skip unchanged documents and chunks)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def chunk_document(doc: Document, *, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """Split a document into chunks; each remembers its title and section path."""
    splitters = require("langchain_text_splitters", "retrieval")
    by_heading = splitters.MarkdownHeaderTextSplitter(_HEADERS, strip_headers=True)
    by_size = splitters.RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    chunks: list[Chunk] = []
    for section in by_heading.split_text(doc.text):
        path = " > ".join(section.metadata[key] for _, key in _HEADERS[1:] if key in section.metadata)
        for piece in by_size.split_text(section.page_content):
            if not piece.strip():
                continue
            chunks.append(
                Chunk(
                    chunk_id=f"{doc.doc_id}#{len(chunks)}",
                    doc_id=doc.doc_id,
                    title=doc.title,
                    text=piece.strip(),
                    section=path,
                    source=doc.source,
                    access=doc.access,
                    content_hash=content_hash(piece),
                )
            )
    return chunks


def embedding_text(chunk: Chunk) -> str:
    """What gets embedded and BM25-indexed: the heading context, then the passage."""
    context = " > ".join(part for part in (chunk.title, chunk.section) if part)
    return f"{context}\n{chunk.text}" if context else chunk.text
