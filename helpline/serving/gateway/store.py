"""The gateway's own SQLite database: API keys (hashed), the audit log, conversations, feedback.

Keys are random 32-byte tokens, so a plain SHA-256 is enough to store them (no password
stretching needed); only the hash and a short prefix (to tell keys apart) are kept.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from helpline.platform.errors import NotFoundError

KeyRole = Literal["customer", "staff", "engineer", "admin"]
ROLE_RANK: dict[str, int] = {"customer": 0, "staff": 1, "engineer": 2, "admin": 3}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash TEXT UNIQUE NOT NULL,
    prefix TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS conversations (
    response_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    at REAL NOT NULL,
    key_id INTEGER,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    served_model TEXT NOT NULL,
    adapter TEXT,
    messages TEXT NOT NULL,
    passages TEXT NOT NULL,
    answer TEXT NOT NULL,
    abstained INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok',
    withdrawn TEXT,
    verification TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    response_id TEXT NOT NULL,
    at REAL NOT NULL,
    key_id INTEGER,
    rating TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    correction TEXT
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first release, with their types: an older database gains them when it is
# opened, and its rows read them as NULL.
_ADDED_COLUMNS = {"conversations": {"withdrawn": "TEXT", "verification": "TEXT"}}


class ApiKey(BaseModel):
    """A key's public record (never the key itself)."""

    id: int
    prefix: str
    role: KeyRole
    name: str = ""
    created_at: float
    revoked_at: float | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class GatewayStore:
    """SQLite at ``path``; each call opens its own connection, so threads may share the object."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            for table, added in _ADDED_COLUMNS.items():
                have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in added.items():
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        try:
            with db:
                yield db
        finally:
            db.close()

    # keys ---------------------------------------------------------------------------------

    def create_key(self, role: KeyRole, *, name: str = "", actor: str = "cli") -> tuple[str, ApiKey]:
        """A new key for ``role``; the plain key is returned once and never stored."""
        if role not in ROLE_RANK:
            raise NotFoundError(f"unknown role {role!r}", hint=f"choose one of: {', '.join(ROLE_RANK)}")
        key = f"hl-{secrets.token_urlsafe(32)}"
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO api_keys (key_hash, prefix, role, name, created_at) VALUES (?, ?, ?, ?, ?)",
                (hash_key(key), key[:10], role, name, now),
            )
            key_id = int(cur.lastrowid or 0)
        self.audit(actor, "key.create", f"key:{key_id}", {"role": role, "name": name})
        return key, ApiKey(id=key_id, prefix=key[:10], role=role, name=name, created_at=now)

    def lookup(self, key: str) -> ApiKey | None:
        """The live key record for a presented key, or None."""
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (hash_key(key),)
            ).fetchone()
        return ApiKey(**{k: row[k] for k in ApiKey.model_fields}) if row else None

    def list_keys(self) -> list[ApiKey]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM api_keys ORDER BY id").fetchall()
        return [ApiKey(**{k: r[k] for k in ApiKey.model_fields}) for r in rows]

    def revoke_key(self, key_id: int, *, actor: str) -> None:
        with self._connect() as db:
            cur = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
            )
        if cur.rowcount == 0:
            raise NotFoundError(f"no live key with id {key_id}", hint="see `helpline keys list`")
        self.audit(actor, "key.revoke", f"key:{key_id}")

    # audit --------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
        """Record who changed what, and when."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time(), actor, action, target, json.dumps(detail or {}, default=str)),
            )

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    # settings -----------------------------------------------------------------------------

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    # conversations ------------------------------------------------------------------------

    def record_turn(self, **row: Any) -> None:
        """Store one answered request (messages, passages, answer, model, latency; the draft the
        hallucination check withdrew and its verdict, when it ran)."""
        row = {**row, "messages": json.dumps(row["messages"]), "passages": json.dumps(row["passages"])}
        if row.get("verification") is not None:
            row["verification"] = json.dumps(row["verification"])
        cols = ", ".join(row)
        with self._connect() as db:
            db.execute(f"INSERT INTO conversations ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def turn(self, response_id: str) -> dict[str, Any]:
        with self._connect() as db:
            row = db.execute("SELECT * FROM conversations WHERE response_id = ?", (response_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no response with id {response_id!r}", hint="use the `id` of a chat completion")
        return _turn(row)

    def turns(self, *, limit: int = 1000, rating: str | None = None) -> list[dict[str, Any]]:
        """Recent turns with their latest feedback (optionally only those rated ``rating``)."""
        query = (
            "SELECT c.*, f.rating, f.comment, f.correction FROM conversations c LEFT JOIN feedback f"
            " ON f.id = (SELECT MAX(id) FROM feedback WHERE response_id = c.response_id)"
        )
        args: tuple = ()
        if rating is not None:
            query += " WHERE f.rating = ?"
            args = (rating,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY c.at DESC LIMIT ?", (*args, limit)).fetchall()
        return [_turn(r) for r in rows]

    def add_feedback(
        self, response_id: str, *, rating: str, comment: str = "", correction: str | None = None, key_id: int | None
    ) -> None:
        self.turn(response_id)  # 404 for an unknown id
        with self._connect() as db:
            db.execute(
                "INSERT INTO feedback (response_id, at, key_id, rating, comment, correction) VALUES (?, ?, ?, ?, ?, ?)",
                (response_id, time.time(), key_id, rating, comment, correction),
            )


def _turn(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["messages"] = json.loads(data["messages"])
    data["passages"] = json.loads(data["passages"])
    data["abstained"] = bool(data["abstained"])
    data["verification"] = json.loads(data["verification"]) if data.get("verification") else None
    return data
