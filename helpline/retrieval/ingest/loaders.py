"""Turn files into Documents: Markdown, text, HTML, PDF, DOCX and FAQ files (CSV or JSONL).

Who may see a document (``access``), its title and metadata come from the file itself (Markdown front
matter, an HTML ``<meta name="access">``, a FAQ's ``access`` column) or from a sidecar beside it: for
``policy.pdf``, ``policy.pdf.yaml`` holds the same keys as front matter (``access: internal``), which is
how a PDF or DOCX says it is for staff. A file that says nothing is ``default_access`` (public for a
folder; an upload passes None, so that its access must be stated).

A file that cannot be used raises a DataError naming the file and the reason, whatever went wrong inside
a parser; `load_directory` and `load_files` collect those failures so that the rest of a batch is still
indexed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from helpline.platform.errors import DataError, HelplineError
from helpline.platform.schemas import Access, Document
from helpline.retrieval.ingest import formats
from helpline.retrieval.ingest.chunking import chunk_document, embedding_text
from helpline.retrieval.ingest.formats import DEFAULT_LIMITS, IngestLimits

MAX_FILE_BYTES = 20 * 1024 * 1024
TEXT_TYPES = {".md", ".markdown", ".txt", ".html", ".htm", ".csv", ".jsonl"}
BINARY_TYPES = {".pdf", ".docx"}
SUPPORTED = TEXT_TYPES | BINARY_TYPES
SIDECAR_SUFFIX = ".yaml"


@dataclass(frozen=True)
class LoadFailure:
    """A file that could not be loaded, and why (shown to the user; the batch goes on)."""

    path: Path
    reason: str
    doc_id: str = ""  # the document the file would have given (kept as it was by a folder sync)


def load_file(
    path: Path,
    *,
    root: Path | None = None,
    default_access: Access | None = "public",
    limits: IngestLimits = DEFAULT_LIMITS,
) -> Document:
    """Load one file; raise DataError naming the file and the reason if it cannot be used.

    ``default_access`` is the access of a file that states none; None refuses such a file.
    """
    try:
        return _load(path, root, default_access, limits)
    except DataError as e:
        raise DataError(f"{path}: {e.message}", hint=e.hint) from e
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})", hint="check the file's permissions") from e
    except HelplineError:
        raise  # a missing optional dependency is not the file's fault
    except Exception as e:  # a parser choking on a hostile file fails that file, never the batch or a request
        raise DataError(f"{path}: cannot be parsed ({type(e).__name__}: {e})"[:600], hint="re-export the file") from e


def load_directory(folder: Path, *, limits: IngestLimits = DEFAULT_LIMITS) -> tuple[list[Document], list[LoadFailure]]:
    """Load every supported file below ``folder``; failures are collected, not raised."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder", hint="pass the folder that holds your articles")
    paths = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED and not p.name.startswith(".")
    )
    return _load_all(paths, root=folder, default_access="public", limits=limits)


def load_files(
    paths: list[Path], *, default_access: Access | None = "public", limits: IngestLimits = DEFAULT_LIMITS
) -> tuple[list[Document], list[LoadFailure]]:
    """Load the given files (ids are the file names without suffix); failures are collected."""
    return _load_all(paths, root=None, default_access=default_access, limits=limits)


def _load_all(
    paths: list[Path], *, root: Path | None, default_access: Access | None, limits: IngestLimits
) -> tuple[list[Document], list[LoadFailure]]:
    docs: dict[str, Document] = {}
    failures: list[LoadFailure] = []
    for path in paths:
        try:
            doc = load_file(path, root=root, default_access=default_access, limits=limits)
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


def _load(path: Path, root: Path | None, default_access: Access | None, limits: IngestLimits) -> Document:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise DataError(
            f"unsupported file type {suffix or '(none)'}", hint=f"supported: {', '.join(sorted(SUPPORTED))}"
        )
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(
            f"the file is {size / 2**20:.1f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit", hint="split it"
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError("the file is empty", hint="add content or remove the file")
    if suffix == ".pdf":
        title, text, meta = formats.parse_pdf(raw, limits)
    elif suffix == ".docx":
        title, text, meta = formats.parse_docx(raw, limits)
    else:
        title, text, meta = _parse_text(suffix, _decode(raw))
    if not text.strip():
        raise DataError("the document has no text", hint="add content or remove the file")
    meta = _with_sidecar(path, meta)
    title = str(meta.pop("title", "") or title or _first_heading(text) or path.stem.replace("-", " "))
    access = _access(meta.pop("access", None), default_access, path)
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


def _access(stated: Any, default: Access | None, path: Path) -> str:
    if stated is None:
        if default is None:
            raise DataError(
                "the file does not say who may see it",
                hint="upload it with access=public or access=internal, or state `access:` in its front matter "
                f"or in a sidecar {path.name}{SIDECAR_SUFFIX}",
            )
        return default
    access = str(stated).strip()
    if access not in ("public", "internal"):
        raise DataError(f"access must be 'public' or 'internal', not {access!r}")
    return access


def _with_sidecar(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` plus the keys of the file's sidecar (``NAME.EXT.yaml``); the two may not disagree."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return meta
    try:
        extra = yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{sidecar.name} is not valid YAML ({e})"[:400], hint="fix or remove the sidecar") from e
    if not isinstance(extra, dict):
        raise DataError(f"{sidecar.name} must be a mapping of keys to values", hint="e.g. `access: internal`")
    merged = dict(meta)
    for key, value in _named(extra, sidecar.name).items():
        if key in meta and str(meta[key]).strip() != str(value).strip():
            raise DataError(
                f"{sidecar.name} says {key}: {value}, the file says {meta[key]}", hint="remove one of the two"
            )
        merged[key] = value
    return merged


def _named(meta: dict, where: str) -> dict[str, Any]:
    """``meta`` with every key a string: YAML reads `2024:` as a number and `yes:` as true."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(key, (str, bool, int, float, datetime.date)):
            out[str(key)] = value
        else:
            raise DataError(f"{where} key {key!r} is not a name", hint="use words as keys, e.g. `owner: risk`")
    return out


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
    return _named(meta, "front matter"), parts[2]


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
