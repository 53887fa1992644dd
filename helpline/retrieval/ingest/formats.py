"""Parsers for the non-Markdown formats. Each turns raw bytes into (title, Markdown-ish text, metadata).

Headings become Markdown headings so that chunking keeps them as section context, whatever the format.
Every parser raises DataError with the reason; the caller adds the file name.
"""

from __future__ import annotations

import csv
import io
import json

from helpline.platform.errors import DataError
from helpline.platform.lazy_imports import require

Parsed = tuple[str, str, dict[str, str]]


def parse_html(text: str) -> Parsed:
    """Headings h1–h3 become #–###; scripts, styles and navigation are dropped."""
    bs4 = require("bs4", "retrieval")
    soup = bs4.BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript", "template"]):
        tag.decompose()
    meta = {}
    access = soup.find("meta", attrs={"name": "access"})
    if access is not None and access.get("content"):
        meta["access"] = str(access["content"]).strip()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    lines: list[str] = []
    body = soup.body or soup
    for el in body.find_all(["h1", "h2", "h3", "h4", "p", "li", "pre", "td", "dt", "dd"]):
        if el.find_parent(["p", "li", "pre", "td", "dd"]) is not None:
            continue  # already part of an enclosing block
        words = el.get_text(" ", strip=True)
        if not words:
            continue
        if el.name in ("h1", "h2", "h3", "h4"):
            level = min(int(el.name[1]), 3)
            title = title or (words if level == 1 else "")
            lines.append(f"\n{'#' * level} {words}\n")
        else:
            lines.append(("- " if el.name == "li" else "") + words)
    if not lines:  # no block markup at all: keep the visible text
        lines = [body.get_text("\n", strip=True)]
    return title, "\n".join(lines).strip(), meta


def parse_pdf(data: bytes) -> Parsed:
    """Text of every page; encrypted PDFs that need a password are refused."""
    pypdf = require("pypdf", "retrieval")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DataError("the PDF is encrypted with a password", hint="save an unprotected copy and add that")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str((reader.metadata or {}).get("/Title", "") or "")
    except DataError:
        raise
    except Exception as e:  # pypdf raises many types for damaged files
        raise DataError(f"not a readable PDF ({type(e).__name__}: {e})", hint="re-export the PDF") from e
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise DataError("the PDF has no extractable text (scanned images?)", hint="run OCR or add the text")
    return title, text, {}


def parse_docx(data: bytes) -> Parsed:
    """Paragraphs, with Word's Title and Heading 1–3 styles as title and headings."""
    docx = require("docx", "retrieval")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as e:
        raise DataError(f"not a readable DOCX file ({type(e).__name__})", hint="re-save it from Word as .docx") from e
    title = document.core_properties.title or ""
    lines = []
    for para in document.paragraphs:
        words = para.text.strip()
        if not words:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        if style == "Title":
            title = title or words
        elif style.startswith("Heading") and style[-1:].isdigit():
            # Word's Title style is the document title, so Heading 1 is a top section (##).
            lines.append(f"\n{'#' * min(int(style[-1]) + 1, 3)} {words}\n")
        else:
            lines.append(words)
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    return title, "\n".join(lines).strip(), {}


def parse_faq_csv(text: str) -> Parsed:
    """A CSV with ``question`` and ``answer`` columns (and optionally ``access``)."""
    reader = csv.DictReader(io.StringIO(text))
    fields = {f.strip().lower(): f for f in reader.fieldnames or []}
    if "question" not in fields or "answer" not in fields:
        raise DataError(
            f"a FAQ CSV needs 'question' and 'answer' columns (found: {', '.join(fields) or 'none'})",
            hint="name the header row's columns question,answer",
        )
    rows = [{k: (row.get(v) or "") for k, v in fields.items()} for row in reader]
    return _faq(rows)


def parse_faq_jsonl(text: str) -> Parsed:
    """One JSON object per line with ``question`` and ``answer`` (and optionally ``access``)."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"line {n} is not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise DataError(f"line {n} needs 'question' and 'answer' fields", hint='{"question": ..., "answer": ...}')
        rows.append({k: str(v) for k, v in row.items()})
    return _faq(rows)


def _faq(rows: list[dict[str, str]]) -> Parsed:
    """Each question becomes a section heading, so every answer is found with its question."""
    pairs = [
        (r["question"].strip(), r["answer"].strip()) for r in rows if r["question"].strip() and r["answer"].strip()
    ]
    access = {(r.get("access") or "public").strip() for r in rows}
    if len(access) > 1:
        raise DataError("a FAQ file mixes public and internal rows", hint="put internal questions in a separate file")
    text = "\n\n".join(f"## {q}\n{a}" for q, a in pairs)
    return "", text, {"access": access.pop()} if access else {}
