"""Turn files into Documents. Markdown front matter supplies title, access and metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from helpline.platform.errors import DataError
from helpline.platform.schemas import Document

MAX_FILE_BYTES = 20 * 1024 * 1024
SUPPORTED = {".md", ".markdown", ".txt"}


@dataclass(frozen=True)
class LoadFailure:
    """A file that could not be loaded, and why (shown to the user; the batch goes on)."""

    path: Path
    reason: str


def load_file(path: Path, *, root: Path | None = None) -> Document:
    """Load one file; raise DataError naming the file and the reason if it cannot be read."""
    if path.suffix.lower() not in SUPPORTED:
        raise DataError(
            f"{path}: unsupported file type {path.suffix or '(none)'}",
            hint=f"supported: {', '.join(sorted(SUPPORTED))}",
        )
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path}: file is {size / 1e6:.1f} MB, over the 20 MB limit", hint="split it")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise DataError(f"{path}: looks like a binary file, not text", hint="export it as text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})", hint="re-save as UTF-8") from e
    meta, body = _split_front_matter(text, path)
    if not body.strip():
        raise DataError(f"{path}: the document is empty", hint="add content or remove the file")
    doc_id = _doc_id(path, root)
    title = str(meta.pop("title", "") or _first_heading(body) or path.stem.replace("-", " "))
    access = str(meta.pop("access", "public"))
    if access not in ("public", "internal"):
        raise DataError(f"{path}: access must be 'public' or 'internal', not {access!r}")
    return Document(
        doc_id=doc_id,
        title=title,
        text=body.strip(),
        source=str(path),
        access=access,  # type: ignore[arg-type]
        metadata={k: str(v) for k, v in meta.items()},
    )


def load_directory(folder: Path) -> tuple[list[Document], list[LoadFailure]]:
    """Load every supported file below ``folder``; failures are collected, not raised."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder", hint="pass the folder that holds your articles")
    docs: list[Document] = []
    failures: list[LoadFailure] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix.lower() not in SUPPORTED or path.name.startswith("."):
            continue
        try:
            docs.append(load_file(path, root=folder))
        except (DataError, OSError) as e:
            failures.append(LoadFailure(path, str(e)))
    return docs, failures


def _split_front_matter(text: str, path: Path) -> tuple[dict, str]:
    if not text.startswith("---"):
        return {}, text
    parts = text.split("---", 2)
    if len(parts) < 3:
        return {}, text
    try:
        meta = yaml.safe_load(parts[1]) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: front matter is not valid YAML ({e})") from e
    if not isinstance(meta, dict):
        raise DataError(f"{path}: front matter must be a mapping of keys to values")
    return meta, parts[2]


def _first_heading(body: str) -> str:
    for line in body.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def _doc_id(path: Path, root: Path | None) -> str:
    if root is None:
        return path.stem
    rel = path.relative_to(root).with_suffix("")
    return rel.as_posix()
