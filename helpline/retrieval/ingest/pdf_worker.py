"""Extract a PDF's text in a process of its own: ``python -m helpline.retrieval.ingest.pdf_worker MAX_PAGES
MAX_MEMORY_BYTES`` reads the PDF on stdin and writes one JSON object on stdout: ``{"title", "pages"}``, or
``{"error": "encrypted" | "pages" | "unreadable", ...}``.

A process, because pypdf can spend minutes on a crafted page: the parent (``formats.parse_pdf``) kills it
at a deadline, which it could not do to a thread. It also caps its own memory.
"""

from __future__ import annotations

import io
import json
import resource
import sys
from typing import Any

from helpline.platform.lazy_imports import require


def extract(data: bytes, *, max_pages: int) -> dict[str, Any]:
    """The PDF's title and the text of each page (or why there is none)."""
    pypdf = require("pypdf", "retrieval")
    reader = pypdf.PdfReader(io.BytesIO(data))
    if reader.is_encrypted and not reader.decrypt(""):
        return {"error": "encrypted"}
    count = len(reader.pages)
    if count > max_pages:
        return {"error": "pages", "pages": count}
    pages = [page.extract_text() or "" for page in reader.pages]
    return {"title": str((reader.metadata or {}).get("/Title", "") or ""), "pages": pages}


def main(argv: list[str]) -> None:
    max_pages, memory = int(argv[0]), int(argv[1])
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory = min(memory, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory, hard))
    data = sys.stdin.buffer.read()
    try:
        result = extract(data, max_pages=max_pages)
    except Exception as e:  # pypdf raises many types for damaged files (MemoryError past the cap, too)
        result = {"error": "unreadable", "detail": f"{type(e).__name__}: {e}"[:500]}
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
