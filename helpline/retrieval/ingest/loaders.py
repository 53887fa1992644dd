"""Turn files into Documents: Markdown, text, HTML, PDF, DOCX and FAQ files (CSV or JSONL).

Markdown front matter supplies title, access and metadata. A file that cannot be used raises a
DataError naming the file and the reason; `load_directory` and `load_files` collect those failures
so that the rest of a batch is still indexed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from helpline.platform.errors import DataError
from helpline.platform.schemas import Document
from helpline.retrieval.ingest import formats
from helpline.retrieval.ingest.chunking import chunk_document, embedding_text

MAX_FILE_BYTES = 20 * 1024 * 1024
TEXT_TYPES = {".md", ".markdown", ".txt", ".html", ".htm", ".csv", ".jsonl"}
BINARY_TYPES = {".pdf", ".docx"}
SUPPORTED = TEXT_TYPES | BINARY_TYPES


@dataclass(frozen=True)
class LoadFailure:
    """A file that could not be loaded, and why (shown to the user; the batch goes on)."""

    path: Path
    reason: str
    doc_id: str = ""  # the document the file would have given (kept as it was by a folder sync)


def load_file(path: Path, *, root: Path | None = None) -> Document:
    """Load one file; raise DataError naming the file and the reason if it cannot be used."""
    try:
        return _load(path, root)
    except DataError as e:
        raise DataError(f"{path}: {e.message}", hint=e.hint) from e
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})", hint="check the file's permissions") from e


def load_directory(folder: Path) -> tuple[list[Document], list[LoadFailure]]:
    """Load every supported file below ``folder``; failures are collected, not raised."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder", hint="pass the folder that holds your articles")
    paths = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED and not p.name.startswith(".")
    )
    return _load_all(paths, root=folder)


def load_files(paths: list[Path]) -> tuple[list[Document], list[LoadFailure]]:
    """Load the given files (ids are the file names without suffix); failures are collected."""
    return _load_all(paths, root=None)


def _load_all(paths: list[Path], *, root: Path | None) -> tuple[list[Document], list[LoadFailure]]:
    docs: dict[str, Document] = {}
    failures: list[LoadFailure] = []
    for path in paths:
        try:
            doc = load_file(path, root=root)
        except DataError as e:
            failures.append(LoadFailure(path, str(e), _doc_id(path, root)))
            continue
        if doc.doc_id in docs:
            other = docs[doc.doc_id].source
            reason = f"{path}: has the same id {doc.doc_id!r} as {other}; rename one"
            failures.append(LoadFailure(path, reason))  # its id's document is the other file's
            continue
        docs[doc.doc_id] = doc
    return list(docs.values()), failures


def _load(path: Path, root: Path | None) -> Document:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise DataError(
            f"unsupported file type {suffix or '(none)'}", hint=f"supported: {', '.join(sorted(SUPPORTED))}"
        )
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(
            f"the file is {size / 1e6:.1f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit", hint="split it"
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError("the file is empty", hint="add content or remove the file")
    if suffix == ".pdf":
        title, text, meta = formats.parse_pdf(raw)
    elif suffix == ".docx":
        title, text, meta = formats.parse_docx(raw)
    else:
        title, text, meta = _parse_text(suffix, _decode(raw))
    if not text.strip():
        raise DataError("the document has no text", hint="add content or remove the file")
    title = str(meta.pop("title", "") or title or _first_heading(text) or path.stem.replace("-", " "))
    access = str(meta.pop("access", "public")).strip()
    if access not in ("public", "internal"):
        raise DataError(f"access must be 'public' or 'internal', not {access!r}")
    return Document(
        doc_id=_doc_id(path, root),
        title=title,
        text=text.strip(),
        source=str(path),
        access=access,  # type: ignore[arg-type]
        metadata={k: str(v) for k, v in meta.items()},
    )


def _parse_text(suffix: str, text: str) -> formats.Parsed:
    if suffix in (".html", ".htm"):
        return formats.parse_html(text)
    if suffix == ".csv":
        return formats.parse_faq_csv(text)
    if suffix == ".jsonl":
        return formats.parse_faq_jsonl(text)
    meta, body = _split_front_matter(text)
    return "", body, meta


def _decode(raw: bytes) -> str:
    """UTF-8 (with or without BOM) or BOM-marked UTF-16; anything else is refused with the reason."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-16 ({e.reason})", hint="re-save it as UTF-8") from e
    if b"\x00" in raw[:8192]:
        raise DataError("looks like a binary file, not text", hint="export it as text, or use the right file type")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}; perhaps Latin-1 or Windows-1252)",
            hint="re-save the file as UTF-8",
        ) from e


def _split_front_matter(text: str) -> tuple[dict, str]:
    if not text.startswith("---"):
        return {}, text
    parts = text.split("---", 2)
    if len(parts) < 3:
        return {}, text
    try:
        meta = yaml.safe_load(parts[1]) or {}
    except yaml.YAMLError as e:
        raise DataError(f"front matter is not valid YAML ({e})") from e
    if not isinstance(meta, dict):
        raise DataError("front matter must be a mapping of keys to values")
    return meta, parts[2]


def _first_heading(body: str) -> str:
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def _doc_id(path: Path, root: Path | None) -> str:
    if root is None:
        return path.stem
    return path.relative_to(root).with_suffix("").as_posix()


def sample_texts(folder: Path, *, chunk_size: int, chunk_overlap: int) -> tuple[list[Document], list[str]]:
    """The sample knowledge base's documents and the texts its chunks embed."""
    docs, _ = load_directory(folder)
    texts = [
        embedding_text(c) for d in docs for c in chunk_document(d, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    ]
    return docs, texts
