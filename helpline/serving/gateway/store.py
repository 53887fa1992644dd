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
from helpline.serving.gateway import store_connectors as _connectors
from helpline.serving.gateway.store_checks import SCHEMA as _CHECKS_SCHEMA
from helpline.serving.gateway.store_checks import attach_checks, upsert_check
from helpline.serving.gateway.store_retention import delete_turns, erase_key_extras
from helpline.serving.gateway.store_schema import ADDED_COLUMNS as _ADDED_COLUMNS
from helpline.serving.gateway.store_schema import INDEXES as _INDEXES
from helpline.serving.gateway.store_schema import SCHEMA as _SCHEMA

KeyRole = Literal["customer", "staff", "engineer", "admin"]
ROLE_RANK: dict[str, int] = {"customer": 0, "staff": 1, "engineer": 2, "admin": 3}

_WITH_FEEDBACK = (
    "SELECT c.*, f.rating, f.comment, f.correction FROM conversations c LEFT JOIN feedback f"
    " ON f.id = (SELECT MAX(id) FROM feedback WHERE response_id = c.response_id)"
)
# The review queue's states: open (rated down or handed over, not corrected yet), reviewed (corrected), all.
_REVIEW = {
    "open": "(f.rating = 'down' OR c.abstained = 1) AND f.correction IS NULL",
    "reviewed": "f.correction IS NOT NULL",
    "all": "(f.rating = 'down' OR c.abstained = 1 OR f.correction IS NOT NULL)",
}


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
    """SQLite at ``path``; each call opens its own connection, so threads may share the object.

    Every method blocks (up to ``busy_timeout_s`` while another writer holds the database), so the
    gateway calls them from worker threads, never on the event loop that serves every open stream.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA + _CHECKS_SCHEMA + _connectors.SCHEMA)
            for table, added in _ADDED_COLUMNS.items():
                have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in added.items():
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            db.executescript(_INDEXES)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s)
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

    # knowledge-base connectors (``store_connectors``) -----------------------------------------

    def connectors(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            return _connectors.listed(db)

    def save_connector(self, name: str, *, source: str, every_s: float, actor: str) -> None:
        with self._connect() as db:
            _connectors.save(db, name, source=source, every_s=every_s, actor=actor)

    def remove_connector(self, name: str) -> bool:
        with self._connect() as db:
            return _connectors.remove(db, name)

    def connector_ran(self, name: str, *, status: str, summary: dict[str, Any]) -> None:
        with self._connect() as db:
            _connectors.ran(db, name, status=status, summary=summary)

    # conversations ------------------------------------------------------------------------

    def record_turn(self, **row: Any) -> None:
        """Store one answered request (messages and where each came from, passages, answer, model, latency;
        the draft the hallucination check withdrew and its verdict, when it ran)."""
        row = {**row, "messages": json.dumps(row["messages"]), "passages": json.dumps(row["passages"])}
        for name in ("verification", "origins"):
            if row.get(name) is not None:
                row[name] = json.dumps(row[name])
        cols = ", ".join(row)
        with self._connect() as db:
            db.execute(f"INSERT INTO conversations ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def answers_in(self, conversation_id: str, *, key_id: int | None) -> set[str]:
        """What this gateway answered ``key_id`` in ``conversation_id`` (stripped), to tell its own answers
        from assistant turns a client wrote into the history it sends."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT answer FROM conversations WHERE conversation_id = ? AND key_id IS ?", (conversation_id, key_id)
            ).fetchall()
        return {r["answer"].strip() for r in rows}

    def turn(self, response_id: str) -> dict[str, Any]:
        """One turn with its latest feedback; NotFoundError (404) for an unknown id."""
        with self._connect() as db:
            row = db.execute(_WITH_FEEDBACK + " WHERE c.response_id = ?", (response_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no response with id {response_id!r}", hint="use the `id` of a chat completion")
        return _turn(row)

    def turns(self, *, limit: int = 1000, rating: str | None = None) -> list[dict[str, Any]]:
        """Recent turns with their latest feedback (optionally only those rated ``rating``)."""
        query, args = _WITH_FEEDBACK, ()
        if rating is not None:
            query, args = query + " WHERE f.rating = ?", (rating,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY c.at DESC LIMIT ?", (*args, limit)).fetchall()
        return [_turn(r) for r in rows]

    def review_items(self, status: str, *, limit: int) -> list[dict[str, Any]]:
        """The review queue, newest first: ``open``, ``reviewed`` or ``all`` (see ``_REVIEW``), each with the
        latest check of its correction (``check``, see ``store_checks``)."""
        with self._connect() as db:
            rows = db.execute(
                f"{_WITH_FEEDBACK} WHERE {_REVIEW[status]} ORDER BY c.at DESC LIMIT ?", (limit,)
            ).fetchall()
            return attach_checks(db, [_turn(r) for r in rows])

    def record_check(self, response_id: str, **check: Any) -> None:
        """Whether the model now answers the correction of ``response_id`` right (``store_checks.upsert_check``)."""
        with self._connect() as db:
            upsert_check(db, response_id, **check)

    def training_turns(self, *, include_unrated: bool = False, page: int = 500) -> Iterator[dict[str, Any]]:
        """Answered turns that may teach a model, oldest first, read ``page`` rows at a time: rated up,
        corrected by staff, or (``include_unrated``) answered and not rated."""
        query = (
            f"{_WITH_FEEDBACK} WHERE c.status = 'ok' AND (c.at > ? OR (c.at = ? AND c.response_id > ?))"
            " AND (f.rating = 'up' OR f.correction IS NOT NULL OR (? AND f.rating IS NULL AND c.abstained = 0))"
            " ORDER BY c.at, c.response_id LIMIT ?"
        )
        at, last = float("-inf"), ""
        while True:
            with self._connect() as db:
                rows = db.execute(query, (at, at, last, int(include_unrated), page)).fetchall()
            yield from (_turn(r) for r in rows)
            if len(rows) < page:
                return
            at, last = rows[-1]["at"], rows[-1]["response_id"]

    def feedback_turns(self, *, since: float | None = None, page: int = 500) -> Iterator[dict[str, Any]]:
        """Turns whose latest feedback was given after ``since`` (every rated turn when None), in the order it
        was given, each with its time and id (``feedback_at``, ``feedback_id``), read ``page`` rows at a time:
        what the improvement loop has not collected yet (its cursor is the last ``feedback_at`` it read)."""
        query = (
            "SELECT c.*, f.rating, f.comment, f.correction, f.at AS feedback_at, f.id AS feedback_id"
            " FROM feedback f JOIN conversations c ON c.response_id = f.response_id"
            " WHERE f.id = (SELECT MAX(id) FROM feedback WHERE response_id = f.response_id)"
            " AND f.at > ? AND f.id > ? ORDER BY f.id LIMIT ?"
        )
        after = 0
        while True:
            with self._connect() as db:
                rows = db.execute(query, (float("-inf") if since is None else since, after, page)).fetchall()
            yield from (_turn(r) for r in rows)
            if len(rows) < page:
                return
            after = rows[-1]["feedback_id"]

    def add_feedback(
        self, response_id: str, *, rating: str, comment: str = "", correction: str | None = None, key_id: int | None
    ) -> None:
        self.turn(response_id)  # 404 for an unknown id
        with self._connect() as db:
            db.execute(
                "INSERT INTO feedback (response_id, at, key_id, rating, comment, correction) VALUES (?, ?, ?, ?, ?, ?)",
                (response_id, time.time(), key_id, rating, comment, correction),
            )

    # erasure and retention -----------------------------------------------------------------

    def find_key(self, ref: str) -> ApiKey:
        """The key (live or revoked) that ``ref`` names: its id, the key itself, or its prefix."""
        queries = [("id = ?", int(ref))] if ref.isdigit() else [("key_hash = ?", hash_key(ref)), ("prefix = ?", ref)]
        with self._connect() as db:
            for where, arg in queries:
                rows = db.execute(f"SELECT * FROM api_keys WHERE {where}", (arg,)).fetchall()
                if rows:
                    break
        if len(rows) != 1:
            found = "no key matches" if not rows else f"keys {', '.join(str(r['id']) for r in rows)} match"
            raise NotFoundError(f"{found} {ref!r}", hint="pass the key's id from `helpline keys list`")
        return ApiKey(**{k: rows[0][k] for k in ApiKey.model_fields})

    def erase(
        self, who: ApiKey | str, *, actor: str, dry_run: bool = False, erased_elsewhere: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """Delete every turn of a key (or of one conversation, by its id) with its passages, drafts, feedback,
        comments and staff corrections, and the feedback the key gave; a failed request the key made keeps its
        audit entry without the error text (it can quote what was sent). The erasure is audited with counts only.

        Deleted rows are overwritten (``secure_delete``) and the write-ahead log is truncated afterwards,
        as far as open readers let it, so the content does not linger in the database files. Returns the
        counts and the erased ``response_ids``. Copies outside the database (reviewed examples) are the caller's
        to remove; ``erased_elsewhere`` counts them in the same audit entry."""
        key = who if isinstance(who, ApiKey) else None
        where, args = ("key_id = ?", (key.id,)) if key else ("conversation_id = ?", (who,))
        target = f"key:{key.id}" if key else f"conversation:{who}"
        with self._connect() as db:
            db.execute("PRAGMA secure_delete = ON")
            ids = [r[0] for r in db.execute(f"SELECT response_id FROM conversations WHERE {where}", args)]
            counts = delete_turns(db, ids, dry_run=dry_run)
            if key is not None:  # how Principal.actor begins
                counts.update(erase_key_extras(db, key_id=key.id, actor=f"{key.role}:{key.id}:", dry_run=dry_run))
        if not dry_run:
            self._truncate_log()
            self.audit(actor, "conversations.erase", target, {**counts, **(erased_elsewhere or {})})
        return {**counts, "response_ids": ids}

    def purge_expired(
        self, retention_days: float, *, actor: str, now: float | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Delete turns older than ``retention_days`` with their feedback, comments and corrections (overwritten,
        as in :meth:`erase`); audited with the cut-off and counts when anything went. Returns the counts."""
        before = (time.time() if now is None else now) - retention_days * 86400
        with self._connect() as db:
            db.execute("PRAGMA secure_delete = ON")
            ids = [r[0] for r in db.execute("SELECT response_id FROM conversations WHERE at < ?", (before,))]
            counts = delete_turns(db, ids, dry_run=dry_run)
        if ids and not dry_run:
            self._truncate_log()
            self.audit(actor, "conversations.purge", f"before:{before:.0f}", {**counts, "days": retention_days})
        return {**counts, "before": before}

    def _truncate_log(self) -> None:
        """Move the write-ahead log into the database and empty it, so deleted rows' old pages go with it."""
        with self._connect() as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def turns_since(self, since: float, *, page: int = 500) -> Iterator[dict[str, Any]]:
        """Turns logged at or after ``since``, oldest first, with their latest feedback, ``page`` rows at a time:
        what a canary's two arms served (`helpline improve` counts them)."""
        query = (
            f"{_WITH_FEEDBACK} WHERE c.at > ? OR (c.at = ? AND c.response_id > ?) ORDER BY c.at, c.response_id LIMIT ?"
        )
        at, last = since, ""
        while True:
            with self._connect() as db:
                rows = db.execute(query, (at, at, last, page)).fetchall()
            yield from (_turn(r) for r in rows)
            if len(rows) < page:
                return
            at, last = rows[-1]["at"], rows[-1]["response_id"]


def _turn(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["messages"] = json.loads(data["messages"])
    data["passages"] = json.loads(data["passages"])
    data["abstained"] = bool(data["abstained"])
    data["verification"] = json.loads(data["verification"]) if data.get("verification") else None
    data["origins"] = json.loads(data["origins"]) if data.get("origins") else None
    return data
