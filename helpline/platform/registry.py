"""The registry: base models, adapters, embedders, hallucination detectors, knowledge-base versions
and aliases, in SQLite.

Aliases (``production``, ``canary``, ...) point at a registered chat model; every change is kept in
``alias_history`` so that a rollback is one call.

A registry file carries its schema version in ``PRAGMA user_version``; opening an older file applies
the missing steps of ``_MIGRATIONS`` in place, in one transaction, so a second open changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from helpline.platform.errors import ConfigError, NotFoundError

ModelKind = Literal["base", "adapter", "embedder", "detector"]

#: The kinds that can answer customers (an alias may point only at one of them).
CHAT_KINDS: tuple[ModelKind, ...] = ("base", "adapter")
_A_KIND: dict[str, str] = {
    "base": "a base model",
    "adapter": "an adapter",
    "embedder": "an embedder",
    "detector": "a hallucination detector",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    base_model TEXT,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS aliases (
    alias TEXT PRIMARY KEY,
    model_name TEXT NOT NULL REFERENCES models(name),
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alias TEXT NOT NULL,
    model_name TEXT,
    previous TEXT,
    at REAL NOT NULL,
    actor TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS kb_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    added INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
"""


class ModelRecord(BaseModel):
    """A registered base model, adapter, embedder or hallucination detector with its lineage metadata."""

    name: str
    kind: ModelKind
    path: str
    base_model: str | None = None
    created_at: float
    metadata: dict[str, Any] = Field(default_factory=dict)


class KBVersion(BaseModel):
    """One knowledge-base sync."""

    id: int
    created_at: float
    added: int
    updated: int
    deleted: int
    content_hash: str
    note: str = ""


class AliasChange(BaseModel):
    """One entry of an alias's history."""

    alias: str
    model_name: str | None
    previous: str | None
    at: float
    actor: str = ""


class Registry:
    """SQLite-backed registry. Each call opens its own connection, so it is safe across threads."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            _migrate(db, self.db_path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        try:
            with db:
                yield db
        finally:
            db.close()

    # models -------------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        *,
        kind: ModelKind,
        path: str | Path,
        base_model: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ModelRecord:
        """Add or replace a model entry."""
        record = ModelRecord(
            name=name,
            kind=kind,
            path=str(path),
            base_model=base_model,
            created_at=time.time(),
            metadata=metadata or {},
        )
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
                (name, kind, record.path, base_model, record.created_at, json.dumps(record.metadata)),
            )
        return record

    def get_model(self, name: str) -> ModelRecord:
        """Look a model up by name or alias."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM models WHERE name = ?", (name,)).fetchone()
            if row is None:
                alias = db.execute("SELECT model_name FROM aliases WHERE alias = ?", (name,)).fetchone()
                if alias is not None:
                    row = db.execute("SELECT * FROM models WHERE name = ?", (alias["model_name"],)).fetchone()
        if row is None:
            known = ", ".join(m.name for m in self.list_models()) or "none"
            raise NotFoundError(
                f"no model or alias named {name!r} in the registry (known: {known})",
                hint="run `helpline models list`, or `helpline models import` for the bundled ones",
            )
        return _model(row)

    def chat_model(self, name: str) -> ModelRecord:
        """Look up, by name or alias, a model that can answer customers (a base model or an adapter): an
        embedder or a hallucination detector named where a chat model belongs is refused with what to pass
        instead. Everything that needs a chat model asks here."""
        record = self.get_model(name)
        if record.kind not in CHAT_KINDS:
            names = [m.name for m in self.list_models() if m.kind in CHAT_KINDS]
            chat = ", ".join(names[:6]) or "none"
            if len(names) > 6:
                chat += f" and {len(names) - 6} more"
            raise ConfigError(
                f"{record.name!r} is {_A_KIND[record.kind]}, not a chat model",
                hint=f"name a base model or adapter (registered: {chat}); `helpline models list` shows each kind",
            )
        return record

    def base_of(self, record_or_name: ModelRecord | str) -> ModelRecord:
        """The base model an adapter (a record, or a name or alias) was trained on; any other model is its
        own base. An adapter whose base is not registered (or is no base model) is refused."""
        record = self.get_model(record_or_name) if isinstance(record_or_name, str) else record_or_name
        if record.kind != "adapter":
            return record
        hint = "register its base model again (`helpline models import` for the bundled ones), or re-export the adapter"
        if not record.base_model:
            raise NotFoundError(f"adapter {record.name!r} does not name its base model", hint=hint)
        try:
            base = self.get_model(record.base_model)
        except NotFoundError as e:
            raise NotFoundError(
                f"adapter {record.name!r} is for base model {record.base_model!r}, which is not registered", hint=hint
            ) from e
        if base.kind != "base":
            raise ConfigError(
                f"adapter {record.name!r} names {base.name!r} as its base model, but that is {_A_KIND[base.kind]}",
                hint=hint,
            )
        return base

    def update_metadata(self, name: str, updates: dict[str, Any]) -> ModelRecord:
        """Merge ``updates`` into a model's metadata (its other fields and creation time stay)."""
        record = self.get_model(name)
        metadata = {**record.metadata, **updates}
        with self._connect() as db:
            db.execute("UPDATE models SET metadata = ? WHERE name = ?", (json.dumps(metadata), record.name))
        return record.model_copy(update={"metadata": metadata})

    def list_models(self, kind: ModelKind | None = None) -> list[ModelRecord]:
        with self._connect() as db:
            if kind is None:
                rows = db.execute("SELECT * FROM models ORDER BY created_at").fetchall()
            else:
                rows = db.execute("SELECT * FROM models WHERE kind = ? ORDER BY created_at", (kind,)).fetchall()
        return [_model(r) for r in rows]

    # aliases ------------------------------------------------------------------------------

    def set_alias(self, alias: str, model_name: str, *, actor: str = "") -> AliasChange:
        """Point ``alias`` at ``model_name`` (a registered chat model), keeping history."""
        target = self.chat_model(model_name).name
        now = time.time()
        with self._connect() as db:
            prev = db.execute("SELECT model_name FROM aliases WHERE alias = ?", (alias,)).fetchone()
            previous = prev["model_name"] if prev else None
            db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (alias, target, now))
            db.execute(
                "INSERT INTO alias_history (alias, model_name, previous, at, actor) VALUES (?, ?, ?, ?, ?)",
                (alias, target, previous, now, actor),
            )
        return AliasChange(alias=alias, model_name=target, previous=previous, at=now, actor=actor)

    def aliases(self) -> dict[str, str]:
        with self._connect() as db:
            rows = db.execute("SELECT alias, model_name FROM aliases ORDER BY alias").fetchall()
        return {r["alias"]: r["model_name"] for r in rows}

    def alias_history(self, alias: str) -> list[AliasChange]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT alias, model_name, previous, at, actor FROM alias_history WHERE alias = ? ORDER BY id",
                (alias,),
            ).fetchall()
        return [AliasChange(**dict(r)) for r in rows]

    def rollback(self, alias: str, *, actor: str = "") -> AliasChange:
        """Point ``alias`` back at what it pointed to before its latest change."""
        current = self.aliases().get(alias)
        if current is None:
            raise NotFoundError(f"alias {alias!r} is not set", hint="promote a model first: `helpline models promote`")
        history = self.alias_history(alias)
        previous = history[-1].previous if history else None
        if previous is None:
            raise NotFoundError(
                f"alias {alias!r} has no earlier model to roll back to",
                hint="promote another model instead",
            )
        return self.set_alias(alias, previous, actor=actor)

    # knowledge-base versions --------------------------------------------------------------

    def record_kb_version(
        self, *, added: int, updated: int, deleted: int, content_hash: str, note: str = ""
    ) -> KBVersion:
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO kb_versions (created_at, added, updated, deleted, content_hash, note)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (now, added, updated, deleted, content_hash, note),
            )
            version_id = int(cur.lastrowid or 0)
        return KBVersion(
            id=version_id,
            created_at=now,
            added=added,
            updated=updated,
            deleted=deleted,
            content_hash=content_hash,
            note=note,
        )

    def kb_versions(self) -> list[KBVersion]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM kb_versions ORDER BY id").fetchall()
        return [KBVersion(**dict(r)) for r in rows]


def _detectors_get_their_kind(db: sqlite3.Connection) -> None:
    """Schema 1: a hallucination detector was a ``base`` whose metadata said ``role: detector``; it becomes
    kind ``detector`` (its metadata is kept as it was)."""
    for row in db.execute("SELECT name, metadata FROM models WHERE kind = 'base'").fetchall():
        if json.loads(row["metadata"] or "{}").get("role") == "detector":
            db.execute("UPDATE models SET kind = 'detector' WHERE name = ?", (row["name"],))


#: Step ``i`` upgrades a registry file from schema version ``i`` to ``i + 1`` (``PRAGMA user_version``).
#: Append only: a step, once released, runs on files already out there.
_MIGRATIONS = (_detectors_get_their_kind,)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file up to ``len(_MIGRATIONS)``; a file written by a newer helpline is refused."""
    if db.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS):
        return  # the usual open: no write lock taken
    db.execute("BEGIN IMMEDIATE")  # two processes opening an old file at once migrate it once
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(_MIGRATIONS):
        raise ConfigError(
            f"registry {path} has schema version {version}; this helpline reads up to {len(_MIGRATIONS)}",
            hint="upgrade helpline to the version that wrote it, or use another workspace (the `workspace` setting)",
        )
    for step in _MIGRATIONS[version:]:
        step(db)
    db.execute(f"PRAGMA user_version = {len(_MIGRATIONS)}")


def _model(row: sqlite3.Row) -> ModelRecord:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"])
    return ModelRecord(**data)
