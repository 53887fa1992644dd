"""The gateway's own database: API keys (hashed), the audit log, conversations, feedback, settings, connectors.

SQLite in the workspace by default; PostgreSQL when ``database_url`` is set, so that gateway replicas on several
hosts share it. The schema is Alembic's (``store_db``, ``migrations/``), brought up to date when a store opens.

Keys are random 32-byte tokens, so a plain SHA-256 is enough to store them (no password
stretching needed); only the hash and a short prefix (to tell keys apart) are kept.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Connection, insert, select, text, update

from helpline.platform.errors import NotFoundError
from helpline.serving.gateway import store_connectors as _connectors
from helpline.serving.gateway import store_jobs as _jobs
from helpline.serving.gateway.store_checks import attach_checks, upsert_check
from helpline.serving.gateway.store_db import engine_for, masked, migrate, upsert
from helpline.serving.gateway.store_retention import delete_turns, erase_key_extras
from helpline.serving.gateway.store_schema import api_keys, audit, conversations, feedback, settings

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
    """SQLite at ``path``, or the PostgreSQL database ``url`` (``database_url``) when one is given; connections come
    from the store's pool, one per call, so threads may share the object.

    Every method blocks (up to ``busy_timeout_s`` while another writer holds a SQLite database), so the
    gateway calls them from worker threads, never on the event loop that serves every open stream.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 5.0, url: str | None = None) -> None:
        self.path = Path(path)
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self.engine = engine_for(self.path, url, busy_timeout_s=busy_timeout_s)
        migrate(self.engine, url)

    @property
    def location(self) -> str:
        """Where the database is, for messages: the SQLite file, or the PostgreSQL address without its password."""
        return str(self.path) if self.url is None else masked(self.url)

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends (rolled back if it raises)."""
        with self.engine.begin() as db:
            yield db

    # keys ---------------------------------------------------------------------------------

    def create_key(self, role: KeyRole, *, name: str = "", actor: str = "cli") -> tuple[str, ApiKey]:
        """A new key for ``role``; the plain key is returned once and never stored."""
        if role not in ROLE_RANK:
            raise NotFoundError(f"unknown role {role!r}", hint=f"choose one of: {', '.join(ROLE_RANK)}")
        key = f"hl-{secrets.token_urlsafe(32)}"
        now = time.time()
        with self._connect() as db:
            row = {"key_hash": hash_key(key), "prefix": key[:10], "role": role, "name": name, "created_at": now}
            key_id = int(db.execute(insert(api_keys), row).inserted_primary_key[0])
        self.audit(actor, "key.create", f"key:{key_id}", {"role": role, "name": name})
        return key, ApiKey(id=key_id, prefix=key[:10], role=role, name=name, created_at=now)

    def lookup(self, key: str) -> ApiKey | None:
        """The live key record for a presented key, or None."""
        query = select(api_keys).where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None))
        with self._connect() as db:
            row = db.execute(query).mappings().first()
        return _key(row) if row else None

    def list_keys(self) -> list[ApiKey]:
        with self._connect() as db:
            rows = db.execute(select(api_keys).order_by(api_keys.c.id)).mappings().all()
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: int, *, actor: str) -> None:
        live = (api_keys.c.id == key_id) & api_keys.c.revoked_at.is_(None)
        with self._connect() as db:
            cur = db.execute(update(api_keys).where(live).values(revoked_at=time.time()))
        if cur.rowcount == 0:
            raise NotFoundError(f"no live key with id {key_id}", hint="see `helpline keys list`")
        self.audit(actor, "key.revoke", f"key:{key_id}")

    # audit --------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
        """Record who changed what, and when."""
        row = {"at": time.time(), "actor": actor, "action": action, "target": target}
        with self._connect() as db:
            db.execute(insert(audit), {**row, "detail": json.dumps(detail or {}, default=str)})

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(select(audit).order_by(audit.c.id.desc()).limit(limit)).mappings().all()
        return [{**r, "detail": json.loads(r["detail"])} for r in rows]

    # settings -----------------------------------------------------------------------------

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self._connect() as db:
            value = db.execute(select(settings.c.value).where(settings.c.key == key)).scalar()
        return default if value is None else value

    def set_setting(self, key: str, value: str) -> None:
        with self._connect() as db:
            upsert(db, settings, {"key": key, "value": value})

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

    # console jobs (``store_jobs``) ----------------------------------------------------------

    def queue_job(self, row: dict[str, Any]) -> str | None:
        """Queue a job unless one is queued or running (checked and written under the write lock); returns the id
        of the one in the way, if any."""
        with self.engine.connect() as db:
            active = _jobs.queue(db, row)
            db.commit()
        return active

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self._connect() as db:
            return _jobs.get(db, job_id)

    def jobs(self, *, limit: int = 50, state: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        with self._connect() as db:
            return _jobs.listed(db, limit=limit, state=state, host=host)

    def claim_job(self, job_id: str | None = None, *, host: str) -> str | None:
        """Claim ``job_id`` (default: the oldest queued job) for a runner on ``host``: its id, or None when there
        was none or another runner took it first."""
        with self._connect() as db:
            job_id = job_id or _jobs.oldest_queued(db)
            return job_id if job_id is not None and _jobs.claim(db, job_id, host=host) else None

    def job_started(self, job_id: str, *, pid: int, pid_start: str | None, log_path: str) -> None:
        with self._connect() as db:
            _jobs.started(db, job_id, pid=pid, pid_start=pid_start, log_path=log_path)

    def job_tail(self, job_id: str, text: str) -> None:
        with self._connect() as db:
            _jobs.tail(db, job_id, text)

    def cancel_job(self, job_id: str) -> str | None:
        with self._connect() as db:
            return _jobs.request_cancel(db, job_id)

    def end_job(self, job_id: str, **end: Any) -> bool:
        with self._connect() as db:
            return _jobs.end(db, job_id, **end)

    # conversations ------------------------------------------------------------------------

    def record_turn(self, **row: Any) -> None:
        """Store one answered request (messages and where each came from, passages, answer, model, latency;
        the draft the hallucination check withdrew and its verdict, when it ran)."""
        row = {**row, "messages": json.dumps(row["messages"]), "passages": json.dumps(row["passages"])}
        for name in ("verification", "origins"):
            if row.get(name) is not None:
                row[name] = json.dumps(row[name])
        with self._connect() as db:
            db.execute(insert(conversations), row)

    def answers_in(self, conversation_id: str, *, key_id: int | None) -> set[str]:
        """What this gateway answered ``key_id`` in ``conversation_id`` (stripped), to tell its own answers
        from assistant turns a client wrote into the history it sends."""
        c = conversations.c
        query = select(c.answer).where(c.conversation_id == conversation_id, c.key_id.is_not_distinct_from(key_id))
        with self._connect() as db:
            answers = db.execute(query).scalars().all()
        return {a.strip() for a in answers}

    def turn(self, response_id: str) -> dict[str, Any]:
        """One turn with its latest feedback; NotFoundError (404) for an unknown id."""
        query = text(_WITH_FEEDBACK + " WHERE c.response_id = :id")
        with self._connect() as db:
            row = db.execute(query, {"id": response_id}).mappings().first()
        if row is None:
            raise NotFoundError(f"no response with id {response_id!r}", hint="use the `id` of a chat completion")
        return _turn(row)

    def turns(self, *, limit: int = 1000, rating: str | None = None) -> list[dict[str, Any]]:
        """Recent turns with their latest feedback (optionally only those rated ``rating``)."""
        where = "" if rating is None else " WHERE f.rating = :rating"
        query = text(_WITH_FEEDBACK + where + " ORDER BY c.at DESC LIMIT :limit")
        with self._connect() as db:
            rows = db.execute(query, {"rating": rating, "limit": limit}).mappings().all()
        return [_turn(r) for r in rows]

    def review_items(self, status: str, *, limit: int) -> list[dict[str, Any]]:
        """The review queue, newest first: ``open``, ``reviewed`` or ``all`` (see ``_REVIEW``), each with the
        latest check of its correction (``check``, see ``store_checks``)."""
        query = text(f"{_WITH_FEEDBACK} WHERE {_REVIEW[status]} ORDER BY c.at DESC LIMIT :limit")
        with self._connect() as db:
            rows = db.execute(query, {"limit": limit}).mappings().all()
            return attach_checks(db, [_turn(r) for r in rows])

    def record_check(self, response_id: str, **check: Any) -> None:
        """Whether the model now answers the correction of ``response_id`` right (``store_checks.upsert_check``)."""
        with self._connect() as db:
            upsert_check(db, response_id, **check)

    def training_turns(self, *, include_unrated: bool = False, page: int = 500) -> Iterator[dict[str, Any]]:
        """Answered turns that may teach a model, oldest first, read ``page`` rows at a time: rated up,
        corrected by staff, or (``include_unrated``) answered and not rated."""
        query = text(
            f"{_WITH_FEEDBACK} WHERE c.status = 'ok' AND (c.at > :at OR (c.at = :at AND c.response_id > :last))"
            " AND (f.rating = 'up' OR f.correction IS NOT NULL"
            " OR (:unrated = 1 AND f.rating IS NULL AND c.abstained = 0))"
            " ORDER BY c.at, c.response_id LIMIT :page"
        )
        args = {"at": float("-inf"), "last": "", "unrated": int(include_unrated), "page": page}
        yield from self._pages(query, args, lambda last: {"at": last["at"], "last": last["response_id"]})

    def feedback_turns(self, *, since: float | None = None, page: int = 500) -> Iterator[dict[str, Any]]:
        """Turns whose latest feedback was given after ``since`` (every rated turn when None), in the order it
        was given, each with its time and id (``feedback_at``, ``feedback_id``), read ``page`` rows at a time:
        what the improvement loop has not collected yet (its cursor is the last ``feedback_at`` it read)."""
        query = text(
            "SELECT c.*, f.rating, f.comment, f.correction, f.at AS feedback_at, f.id AS feedback_id"
            " FROM feedback f JOIN conversations c ON c.response_id = f.response_id"
            " WHERE f.id = (SELECT MAX(id) FROM feedback WHERE response_id = f.response_id)"
            " AND f.at > :since AND f.id > :after ORDER BY f.id LIMIT :page"
        )
        args = {"since": float("-inf") if since is None else since, "after": 0, "page": page}
        yield from self._pages(query, args, lambda last: {"after": last["feedback_id"]})

    def _pages(self, query: Any, args: dict[str, Any], cursor: Any) -> Iterator[dict[str, Any]]:
        """``query`` run a page at a time, each page after the last row of the one before (``cursor(row)``: the
        arguments that say so), each page in a connection of its own so no read holds the database for long."""
        while True:
            with self._connect() as db:
                rows = db.execute(query, args).mappings().all()
            yield from (_turn(r) for r in rows)
            if len(rows) < args["page"]:
                return
            args = {**args, **cursor(rows[-1])}

    def add_feedback(
        self, response_id: str, *, rating: str, comment: str = "", correction: str | None = None, key_id: int | None
    ) -> None:
        self.turn(response_id)  # 404 for an unknown id
        row = {"response_id": response_id, "at": time.time(), "key_id": key_id, "rating": rating}
        with self._connect() as db:
            db.execute(insert(feedback), {**row, "comment": comment, "correction": correction})

    # erasure and retention -----------------------------------------------------------------

    def find_key(self, ref: str) -> ApiKey:
        """The key (live or revoked) that ``ref`` names: its id, the key itself, or its prefix."""
        k = api_keys.c
        wheres = [k.id == int(ref)] if ref.isdigit() else [k.key_hash == hash_key(ref), k.prefix == ref]
        with self._connect() as db:
            for where in wheres:
                rows = db.execute(select(api_keys).where(where)).mappings().all()
                if rows:
                    break
        if len(rows) != 1:
            found = "no key matches" if not rows else f"keys {', '.join(str(r['id']) for r in rows)} match"
            raise NotFoundError(f"{found} {ref!r}", hint="pass the key's id from `helpline keys list`")
        return _key(rows[0])

    def erase(
        self, who: ApiKey | str, *, actor: str, dry_run: bool = False, erased_elsewhere: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """Delete every turn of a key (or of one conversation, by its id) with its passages, drafts, feedback,
        comments and staff corrections, and the feedback the key gave; a failed request the key made keeps its
        audit entry without the error text (it can quote what was sent). The erasure is audited with counts only.

        On SQLite, deleted rows are overwritten (``secure_delete``) and the write-ahead log is truncated afterwards,
        as far as open readers let it, so the content does not linger in the database files (PostgreSQL reuses the
        space of deleted rows when it vacuums them). Returns the counts and the erased ``response_ids``. Copies
        outside the database (reviewed examples) are the caller's to remove; ``erased_elsewhere`` counts them in the
        same audit entry."""
        key = who if isinstance(who, ApiKey) else None
        where = conversations.c.key_id == key.id if key else conversations.c.conversation_id == who
        target = f"key:{key.id}" if key else f"conversation:{who}"
        with self._connect() as db:
            ids = list(db.execute(select(conversations.c.response_id).where(where)).scalars())
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
            ids = list(db.execute(select(conversations.c.response_id).where(conversations.c.at < before)).scalars())
            counts = delete_turns(db, ids, dry_run=dry_run)
        if ids and not dry_run:
            self._truncate_log()
            self.audit(actor, "conversations.purge", f"before:{before:.0f}", {**counts, "days": retention_days})
        return {**counts, "before": before}

    def _truncate_log(self) -> None:
        """Move SQLite's write-ahead log into the database and empty it, so deleted rows' old pages go with it."""
        if self.engine.dialect.name == "sqlite":
            with self._connect() as db:
                db.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def turns_since(self, since: float, *, page: int = 500) -> Iterator[dict[str, Any]]:
        """Turns logged at or after ``since``, oldest first, with their latest feedback, ``page`` rows at a time:
        what a canary's two arms served (`helpline improve` counts them)."""
        query = text(
            f"{_WITH_FEEDBACK} WHERE c.at > :at OR (c.at = :at AND c.response_id > :last)"
            " ORDER BY c.at, c.response_id LIMIT :page"
        )
        args = {"at": since, "last": "", "page": page}
        yield from self._pages(query, args, lambda last: {"at": last["at"], "last": last["response_id"]})


def _key(row: Mapping[str, Any]) -> ApiKey:
    return ApiKey(**{k: row[k] for k in ApiKey.model_fields})


def _turn(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    data["messages"] = json.loads(data["messages"])
    data["passages"] = json.loads(data["passages"])
    data["abstained"] = bool(data["abstained"])
    data["verification"] = json.loads(data["verification"]) if data.get("verification") else None
    data["origins"] = json.loads(data["origins"]) if data.get("origins") else None
    return data
