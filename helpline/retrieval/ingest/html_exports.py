"""Wiki exports as knowledge-base documents: Confluence and Notion, as their "export to HTML" writes them.

- **Confluence** (Space settings → Export space → HTML): one folder of pages named ``Title_123456.html`` (or
  ``123456.html``) beside ``index.html`` (the space's page list, not an article), ``attachments/``, ``images/``
  and ``styles/``. A page holds its title in ``#title-text`` as ``SPACE : Title``, its breadcrumbs in
  ``#breadcrumbs`` and its text in ``#main-content``.
- **Notion** (Export → HTML, unzipped): a tree of pages named ``Title <32 hex id>.html``, sub-pages in a folder of
  the same name. A page is an ``<article>`` with ``h1.page-title``, a ``table.properties`` (a database row's
  properties) and ``div.page-body``.

Who may read a page (``access``), most specific first: a Notion property named Access, Visibility or Audience
(``Internal``, ``Staff`` or ``Private`` make it staff-only); an HTML ``<meta name="access">``; then the export's
``helpline-access.yaml``, written beside the pages by whoever exports them (``default: internal`` for a staff
space, ``pages: {ID or title: internal}`` for single pages), because neither tool writes page restrictions into
its HTML export; else public. A document's id is the tool's page id (``confluence-123456``, ``notion-<hex>``), so
an edited page replaces its earlier version and a deleted one is dropped by the next sync of the same export.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from helpline.platform.errors import DataError
from helpline.platform.files import read_yaml
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import Document
from helpline.retrieval.ingest import formats
from helpline.retrieval.ingest.loaders import MAX_FILE_BYTES

ACCESS_FILE = "helpline-access.yaml"
_NOTION_ID = re.compile(r"([0-9a-f]{32})$")
_CONFLUENCE_ID = re.compile(r"(?:^|_)(\d+)$")
_ACCESS_PROPERTIES = ("access", "visibility", "audience")
_INTERNAL_WORDS = ("internal", "staff", "private")
_PUBLIC_WORDS = ("public", "customer", "customers", "everyone")


def load_html_export(kind: str, path: Path) -> list[Document]:
    """The pages of a Confluence or Notion HTML export (a folder), as documents; pages with no text are left out.
    DataError for a path that is no such export, naming what to export."""
    if not path.is_dir():
        raise DataError(f"{path} is not a folder", hint=f"unzip the {kind} HTML export and point at its folder")
    access = _access_map(path)
    files = sorted(path.glob("*.html")) if kind == "confluence" else sorted(path.rglob("*.html"))
    to_document = _confluence if kind == "confluence" else _notion
    docs: dict[str, Document] = {}
    for file in files:
        if kind == "confluence" and file.name == "index.html":
            continue  # the space's page list
        if file.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{file} is over {MAX_FILE_BYTES // 2**20} MB", hint="split the page, or leave it out")
        soup = require("bs4", "retrieval").BeautifulSoup(file.read_text(encoding="utf-8-sig"), "html.parser")
        doc = to_document(file, path, soup, access)
        if doc is not None:
            docs[doc.doc_id] = doc
    if not docs and not any(path.rglob("*.html")):
        raise DataError(f"{path} holds no HTML page", hint=f"export the {kind} space or pages to HTML and unzip it")
    return list(docs.values())


def _access_map(root: Path) -> dict[str, Any]:
    file = root / ACCESS_FILE
    if not file.is_file():
        return {"default": "public", "pages": {}}
    raw = read_yaml(file, what="the export's access map", hint="e.g. `default: internal` or `pages: {ID: internal}`")
    if not isinstance(raw, dict) or set(raw) - {"default", "pages"}:
        raise DataError(f"{file} must hold `default:` and/or `pages:`", hint="e.g. `default: internal`")
    pages = raw.get("pages") or {}
    values = [raw.get("default", "public"), *pages.values()] if isinstance(pages, dict) else [None]
    if any(v not in ("public", "internal") for v in values):
        raise DataError(f"{file}: access must be 'public' or 'internal'", hint="`pages:` maps page ids or titles")
    return {"default": raw.get("default", "public"), "pages": {str(k): v for k, v in pages.items()}}


def _page_access(stated: str | None, access: dict[str, Any], page_id: str, title: str) -> str:
    if stated is not None:
        return stated
    return access["pages"].get(page_id) or access["pages"].get(title) or access["default"]


def _meta_access(soup: Any) -> str | None:
    tag = soup.find("meta", attrs={"name": "access"})
    value = str(tag.get("content", "")).strip().lower() if tag is not None else ""
    return value if value in ("public", "internal") else None


def _text(element: Any) -> str:
    return formats.parse_html(str(element))[1].strip() if element is not None else ""


def _confluence(file: Path, root: Path, soup: Any, access: dict[str, Any]) -> Document | None:
    text = _text(soup.find(id="main-content"))
    if not text:
        return None
    heading = soup.find(id="title-text") or soup.title
    title = heading.get_text(" ", strip=True) if heading is not None else file.stem
    title = title.split(" : ", 1)[1].strip() if " : " in title else title  # "SPACE : Title"
    match = _CONFLUENCE_ID.search(file.stem)
    page_id = match.group(1) if match else file.stem
    crumbs = [a.get_text(" ", strip=True) for a in soup.select("#breadcrumbs li")]
    modified = soup.select_one(".page-metadata")
    meta = {"breadcrumbs": " > ".join(c for c in crumbs if c),
            "page_metadata": modified.get_text(" ", strip=True) if modified is not None else ""}  # fmt: skip
    return Document(
        doc_id=f"confluence-{page_id}",
        title=title,
        text=text,
        source=str(file.relative_to(root)),
        access=_page_access(_meta_access(soup), access, page_id, title),
        metadata={k: v for k, v in meta.items() if v},
    )


def _notion(file: Path, root: Path, soup: Any, access: dict[str, Any]) -> Document | None:
    text = _text(soup.select_one("div.page-body"))
    if not text:
        return None
    heading = soup.select_one("h1.page-title") or soup.title
    title = heading.get_text(" ", strip=True) if heading is not None else file.stem
    match = _NOTION_ID.search(file.stem.replace("-", "")) or _NOTION_ID.search(
        str((soup.find("article") or {}).get("id", "")).replace("-", "")
    )
    page_id = match.group(1) if match else file.stem
    properties = {
        row.find("th").get_text(" ", strip=True): row.find("td").get_text(" ", strip=True)
        for row in soup.select("table.properties tr")
        if row.find("th") is not None and row.find("td") is not None
    }
    stated = _meta_access(soup)
    for name, value in properties.items():
        if name.strip().lower() in _ACCESS_PROPERTIES:
            words = value.lower().split()
            if any(w in _INTERNAL_WORDS for w in words):
                stated = "internal"
            elif any(w in _PUBLIC_WORDS for w in words):
                stated = "public"
    parents = [p.name for p in file.relative_to(root).parents if p.name]
    meta = {"path": " > ".join(reversed([_NOTION_ID.sub("", p).strip() for p in parents])),
            **{f"property:{k}": v for k, v in properties.items() if v}}  # fmt: skip
    return Document(
        doc_id=f"notion-{page_id}",
        title=title,
        text=text,
        source=str(file.relative_to(root)),
        access=_page_access(stated, access, page_id, title),
        metadata={k: v[:300] for k, v in meta.items() if v},
    )
