"""The sync ledger: which documents are in the store, with which content hash and chunk ids.

Crash safety comes from the order of writes. Before a document's chunks are written to (or deleted
from) the vector store, its row is marked ``pending`` together with every chunk id it may leave
behind (old and new); only after the store has been changed is the row marked ``ok`` with the new
ids. A sync killed at any point therefore leaves rows that say exactly what to redo, and chunk ids
are deterministic (``doc_id#n``), so redoing an upsert never duplicates a chunk.

Each row also records the document's ``origin``: ``folder:<absolute path>`` (a folder sync brought it, and
only a sync of that folder deletes it), ``upload`` (the gateway's admin API) or ``added`` (added by
hand, e.g. `helpline kb add`). Ledgers written before origins existed read as ``""``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

State = Literal["ok", "pending", "deleting"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    doc_hash TEXT NOT NULL,
    previous_hash TEXT,
    chunk_ids TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    access TEXT NOT NULL DEFAULT 'public',
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    origin TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = "doc_id, doc_hash, previous_hash, chunk_ids, title, source, access, state, updated_at, origin"


@dataclass(frozen=True)
class Record:
    """One document as the ledger knows it."""

    doc_id: str
    doc_hash: str
    previous_hash: str | None
    chunk_ids: list[str]
    title: str
    source: str
    access: str
    state: State
    updated_at: float
    origin: str = ""


class RecordManager:
    """SQLite ledger of documents (``path=":memory:"`` for tests and throwaway indexes)."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed row survives a crash or power loss
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(documents)")}
        if "origin" not in columns:  # a ledger from before origins: its documents' origin is unknown ("")
            self._db.execute("ALTER TABLE documents ADD COLUMN origin TEXT NOT NULL DEFAULT ''")

    def all(self) -> dict[str, Record]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM documents ORDER BY doc_id").fetchall()
        return {r[0]: Record(r[0], r[1], r[2], json.loads(r[3]), *r[4:]) for r in rows}

    def begin(
        self, doc_id: str, *, doc_hash: str, previous_hash: str | None, chunk_ids: list[str], meta: dict[str, str]
    ) -> None:
        """Mark ``doc_id`` as being written; ``chunk_ids`` must cover old and new chunks."""
        self._db.execute(
            f"INSERT OR REPLACE INTO documents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (
                doc_id,
                doc_hash,
                previous_hash,
                json.dumps(sorted(set(chunk_ids))),
                meta.get("title", ""),
                meta.get("source", ""),
                meta.get("access", "public"),
                time.time(),
                meta.get("origin", ""),
            ),
        )

    def set_origin(self, doc_id: str, origin: str) -> None:
        """Record that ``origin`` now brings ``doc_id`` (its content is unchanged)."""
        self._db.execute("UPDATE documents SET origin = ? WHERE doc_id = ?", (origin, doc_id))

    def commit(self, doc_id: str, chunk_ids: list[str], *, change: str) -> None:
        """The store now holds exactly ``chunk_ids`` for ``doc_id``; count the change for the next version."""
        with _transaction(self._db):
            self._db.execute(
                "UPDATE documents SET chunk_ids = ?, state = 'ok', previous_hash = NULL, updated_at = ?"
                " WHERE doc_id = ?",
                (json.dumps(chunk_ids), time.time(), doc_id),
            )
            self._count(change)

    def begin_delete(self, doc_id: str) -> None:
        self._db.execute(
            "UPDATE documents SET state = 'deleting', updated_at = ? WHERE doc_id = ?", (time.time(), doc_id)
        )

    def forget(self, doc_id: str) -> None:
        """The document's chunks are gone from the store; drop its row and count the deletion."""
        with _transaction(self._db):
            self._db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
            self._count("deleted")

    def adopt(self, records: list[Record]) -> None:
        """Take over documents found in a store that has no ledger yet (indexes built before it existed)."""
        with _transaction(self._db):
            for r in records:
                self._db.execute(
                    f"INSERT OR IGNORE INTO documents ({_COLUMNS}) VALUES (?, ?, NULL, ?, ?, ?, ?, 'ok', ?, ?)",
                    (r.doc_id, r.doc_hash, json.dumps(r.chunk_ids), r.title, r.source, r.access, time.time(), r.origin),
                )

    def clear(self) -> None:
        self._db.execute("DELETE FROM documents")

    # changes not yet recorded as a knowledge-base version survive a crash here ------------

    def _count(self, change: str) -> None:
        self._db.execute(
            "INSERT INTO meta VALUES (?, '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (f"unrecorded_{change}",),
        )

    def unrecorded(self) -> dict[str, int]:
        """Changes made since the last recorded version: {'added': n, 'updated': n, 'deleted': n}."""
        return {c: int(self.get_meta(f"unrecorded_{c}") or 0) for c in ("added", "updated", "deleted")}

    def reset_unrecorded(self) -> None:
        self._db.execute("DELETE FROM meta WHERE key LIKE 'unrecorded_%'")

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self._db.close()


class _transaction:
    """BEGIN/COMMIT around a block on an autocommit connection (rollback on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
