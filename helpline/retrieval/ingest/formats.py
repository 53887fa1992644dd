"""Parsers for the non-Markdown formats. Each turns raw bytes into (title, Markdown-ish text, metadata).

Headings become Markdown headings so that chunking keeps them as section context, whatever the format.
Every parser raises DataError with the reason; the caller adds the file name. Files may be hostile (an
upload, a folder anyone can write to), so what parsing may cost is bounded: a DOCX's unpacked size is
checked before it is opened, and a PDF is parsed in a child process that is killed at a deadline.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from helpline.platform.errors import DataError
from helpline.platform.lazy_imports import require

Parsed = tuple[str, str, dict[str, str]]

MB = 2**20
#: The folder that holds the ``helpline`` package, so the PDF child imports this very copy of it.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])


@dataclass(frozen=True)
class IngestLimits:
    """What one file may cost to parse; over a limit, the file is refused with the reason."""

    #: Sum of a DOCX's members as the zip declares them (zipfile never unpacks a member past that size).
    max_docx_unpacked_bytes: int = 50 * MB
    max_docx_members: int = 5000
    max_pdf_pages: int = 1000
    #: pypdf spends seconds on a crafted page of a few kilobytes (and minutes on larger ones).
    pdf_timeout_s: float = 60.0
    #: Address space of the PDF child process.
    pdf_memory_bytes: int = 2048 * MB


DEFAULT_LIMITS = IngestLimits()


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


def parse_pdf(data: bytes, limits: IngestLimits = DEFAULT_LIMITS) -> Parsed:
    """Text of every page, extracted in a child process (``pdf_worker``) killed at ``limits.pdf_timeout_s``;
    encrypted PDFs that need a password and PDFs over ``limits.max_pdf_pages`` pages are refused."""
    argv = [sys.executable, "-m", "helpline.retrieval.ingest.pdf_worker", str(limits.max_pdf_pages)]
    argv.append(str(limits.pdf_memory_bytes))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(argv, input=data, capture_output=True, timeout=limits.pdf_timeout_s, env=env)
    except subprocess.TimeoutExpired as e:
        raise DataError(
            f"reading the PDF took longer than {limits.pdf_timeout_s:g} s", hint="re-export the PDF, or split it"
        ) from e
    try:
        result = json.loads(done.stdout)
    except ValueError:
        why = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DataError(f"not a readable PDF (the reader failed: {why[:300]})", hint="re-export the PDF") from None
    error = result.get("error")
    if error == "encrypted":
        raise DataError("the PDF is encrypted with a password", hint="save an unprotected copy and add that")
    if error == "pages":
        raise DataError(
            f"the PDF has {result['pages']} pages, over the {limits.max_pdf_pages}-page limit", hint="split it"
        )
    if error:
        raise DataError(f"not a readable PDF ({result['detail']})", hint="re-export the PDF")
    text = "\n\n".join(p.strip() for p in result["pages"] if p.strip())
    if not text:
        raise DataError("the PDF has no extractable text (scanned images?)", hint="run OCR or add the text")
    return result["title"], text, {}


def parse_docx(data: bytes, limits: IngestLimits = DEFAULT_LIMITS) -> Parsed:
    """Paragraphs, with Word's Title and Heading 1–3 styles as title and headings; a DOCX that would
    unpack past ``limits`` (a zip bomb) is refused before it is opened."""
    _check_unpacked_size(data, limits)
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


def _check_unpacked_size(data: bytes, limits: IngestLimits) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as e:
        raise DataError(f"not a readable DOCX file ({type(e).__name__})", hint="re-save it from Word as .docx") from e
    if len(members) > limits.max_docx_members:
        raise DataError(f"the DOCX holds {len(members)} parts, over the {limits.max_docx_members} limit")
    unpacked = sum(m.file_size for m in members)
    if unpacked > limits.max_docx_unpacked_bytes:
        raise DataError(
            f"the DOCX unpacks to {unpacked / MB:.1f} MB, over the {limits.max_docx_unpacked_bytes // MB} MB limit",
            hint="remove large embedded media, or split the document",
        )


def parse_faq_csv(text: str) -> Parsed:
    """A CSV with ``question`` and ``answer`` columns (and optionally ``access``)."""
    reader = csv.DictReader(io.StringIO(text))
    try:
        fields = {f.strip().lower(): f for f in reader.fieldnames or []}
        if "question" not in fields or "answer" not in fields:
            raise DataError(
                f"a FAQ CSV needs 'question' and 'answer' columns (found: {', '.join(fields) or 'none'})",
                hint="name the header row's columns question,answer",
            )
        rows = [{k: (row.get(v) or "") for k, v in fields.items()} for row in reader]
    except csv.Error as e:
        if "field limit" in str(e):
            raise DataError(
                f"a field on line {reader.line_num} is longer than {csv.field_size_limit() // 1024} KiB",
                hint="shorten that answer, or split it into several questions",
            ) from e
        raise DataError(f"not a valid CSV file (line {reader.line_num}: {e})", hint="re-export it as CSV") from e
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
    # A row without an access value is public only beside public rows; a file where no row says is unstated.
    given = {(r.get("access") or "").strip() for r in rows}
    stated = given - {""}
    if len(stated) > 1 or (stated and stated != {"public"} and "" in given):
        raise DataError("a FAQ file mixes public and internal rows", hint="put internal questions in a separate file")
    text = "\n\n".join(f"## {q}\n{a}" for q, a in pairs)
    return "", text, {"access": stated.pop()} if stated else {}
