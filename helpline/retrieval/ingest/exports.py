"""Help-centre article exports as knowledge-base documents: Zendesk Guide and Intercom (here), Confluence and
Notion HTML exports (``html_exports.py``).

An export is what each tool's articles API returns, saved as it comes: one JSON page, a folder of pages, or
JSON Lines of article objects.

- **Zendesk Guide** (``GET /api/v2/help_center/articles``): ``{"articles": [...]}``, each with ``id``, ``title``,
  ``body`` (HTML), ``html_url``, ``draft``, ``user_segment_id`` (null: everyone may read it; set: a restricted
  segment, here ``internal``, which only staff keys retrieve), ``locale``, ``updated_at``, ``section_id``,
  ``label_names``.
- **Intercom** (``GET /articles``): ``{"type": "list", "data": [...]}``, each with ``id``, ``title``, ``body``
  (HTML), ``url``, ``state`` (``published`` or ``draft``), ``parent_id``, ``updated_at`` (epoch seconds). Intercom
  articles are public; its internal articles are another API and export.

Drafts are left out. A document's id is the tool's article id (``zendesk-123``), so an edited article replaces its
earlier version and a deleted one is dropped by the next sync of the same export (``KnowledgeBase.sync_source``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpline.platform.errors import DataError
from helpline.platform.schemas import Document
from helpline.retrieval.ingest import formats
from helpline.retrieval.ingest.html_exports import load_html_export
from helpline.retrieval.ingest.loaders import MAX_FILE_BYTES

KINDS = ("zendesk", "intercom", "confluence", "notion")


def parse_source(ref: str) -> tuple[str, Path]:
    """``KIND:PATH`` (``zendesk:exports/articles.json``) → (kind, path); DataError naming the kinds otherwise."""
    kind, sep, path = ref.partition(":")
    if not sep or kind not in KINDS:
        raise DataError(
            f"{ref!r} is not KIND:PATH", hint=f"KIND is one of {', '.join(KINDS)}, e.g. zendesk:articles.json"
        )
    if not Path(path).exists():
        raise DataError(
            f"{path} does not exist",
            hint="point at the export: a JSON page, a folder of them, or JSONL; for confluence and notion the "
            "unzipped HTML export's folder",
        )
    return kind, Path(path)


def source_origin(kind: str, path: Path) -> str:
    """The origin of documents a sync of this export brings (what a later sync of it may delete)."""
    return f"{kind}:{path.resolve()}"


def load_export(kind: str, path: Path) -> list[Document]:
    """The published articles of an export, as documents (drafts left out); DataError for a file that is no such
    export, naming the file."""
    if kind in ("confluence", "notion"):
        return load_html_export(kind, path)
    key = "articles" if kind == "zendesk" else "data"
    to_document = _zendesk if kind == "zendesk" else _intercom
    docs: dict[str, Document] = {}
    for where, article in _articles(path, key):
        try:
            doc = to_document(article)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{where}: not a {kind} article ({type(e).__name__}: {e})",
                hint=f"export the articles with the {kind} articles API and save its JSON as it is",
            ) from e
        if doc is not None:
            docs[doc.doc_id] = doc
    return list(docs.values())


def _articles(path: Path, key: str) -> Iterator[tuple[str, Any]]:
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    for file in files:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{file} is over {MAX_FILE_BYTES // 2**20} MB", hint="save the export in pages")
        text = file.read_text(encoding="utf-8-sig")
        try:
            if file.suffix == ".jsonl":
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                page = json.loads(text)
                rows = page[key] if isinstance(page, dict) else page
        except (ValueError, KeyError) as e:
            raise DataError(
                f"{file} is not an export page ({e})", hint=f"a page holds its articles under {key!r}"
            ) from e
        if not isinstance(rows, list):
            raise DataError(f"{file}: {key!r} is not a list of articles")
        for i, row in enumerate(rows):
            yield f"{file} article {i + 1}", row


def _text(html: str) -> str:
    return formats.parse_html(html or "")[1].strip()


def _zendesk(a: dict[str, Any]) -> Document | None:
    if a.get("draft"):
        return None
    text = _text(a["body"])
    if not text:
        return None
    meta = {"locale": a.get("locale"), "updated_at": a.get("updated_at"), "section_id": a.get("section_id"),
            "labels": ",".join(a.get("label_names") or [])}  # fmt: skip
    return Document(
        doc_id=f"zendesk-{int(a['id'])}",
        title=str(a["title"]),
        text=text,
        source=str(a.get("html_url") or a.get("url") or ""),
        access="public" if a.get("user_segment_id") is None else "internal",
        metadata={k: str(v) for k, v in meta.items() if v not in (None, "")},
    )


def _intercom(a: dict[str, Any]) -> Document | None:
    if a.get("state", "published") != "published":
        return None
    text = _text(a["body"])
    if not text:
        return None
    meta = {"updated_at": a.get("updated_at"), "parent_id": a.get("parent_id")}
    return Document(
        doc_id=f"intercom-{int(a['id'])}",
        title=str(a["title"]),
        text=text,
        source=str(a.get("url") or ""),
        access="public",
        metadata={k: str(v) for k, v in meta.items() if v not in (None, "")},
    )
