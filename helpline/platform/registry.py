"""The registry: base models, adapters, embedders, hallucination detectors, knowledge-base versions
and aliases, in SQLite.

Aliases (``production``, ``canary``, ...) point at a registered chat model; every change is kept in
``alias_history`` so that a rollback is one call. A rollback is marked as one there, so the next rollback
walks further back instead of undoing it.

A model's name is its identity: aliases, their history (where a rollback returns) and the gate's verdict
all refer to it by name. A registered name is therefore never silently given other weights: see
:meth:`Registry.register_model`.

A registry file carries its schema version in ``PRAGMA user_version``; opening an older file applies
the missing steps of ``MIGRATIONS`` in place, in one transaction, so a second open changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.registry_migrations import migrate
from helpline.platform.registry_records import (
    CHAT_KINDS,
    AliasChange,
    KBVersion,
    ModelKind,
    ModelRecord,
    RollbackStep,
)

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
    actor TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT 'set'
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


class ModelNameTakenError(ConfigError):
    """A model is registered under that name already."""

    http_status = 409


class Registry:
    """SQLite-backed registry. Each call opens its own connection, so it is safe across threads."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            migrate(db, self.db_path)

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
        replace: bool = False,
    ) -> ModelRecord:
        """Add a model entry. A name already registered is refused (:class:`ModelNameTakenError`, naming a
        free one) unless ``replace``, and even then while anything refers to the model: an alias, an
        alias's history (a rollback may return to it) or a gate verdict. New weights under such a name
        would go live, or be promoted, without passing the gate."""
        record = ModelRecord(
            name=name,
            kind=kind,
            path=str(path),
            base_model=base_model,
            created_at=time.time(),
            metadata=metadata or {},
        )
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # the check and the write in one transaction
            _refuse_taken(db, name, replace=replace)
            db.execute(
                "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
                (name, kind, record.path, base_model, record.created_at, json.dumps(record.metadata)),
            )
        return record

    def check_name_free(self, name: str, *, replace: bool = False) -> None:
        """Raise :class:`ModelNameTakenError` where ``register_model(name, replace=replace)`` would, so that
        a job which ends by registering refuses before it spends its time or writes anything."""
        with self._connect() as db:
            _refuse_taken(db, name, replace=replace)

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
        with self._connect() as db:
            return _point(db, alias, target, actor=actor, action="set")

    def aliases(self) -> dict[str, str]:
        with self._connect() as db:
            rows = db.execute("SELECT alias, model_name FROM aliases ORDER BY alias").fetchall()
        return {r["alias"]: r["model_name"] for r in rows}

    def alias_history(self, alias: str) -> list[AliasChange]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT alias, model_name, previous, at, actor, action FROM alias_history WHERE alias = ? ORDER BY id",
                (alias,),
            ).fetchall()
        return [AliasChange(**dict(r)) for r in rows]

    def rollback_step(self, alias: str) -> RollbackStep:
        """Where rolling ``alias`` back would take it; :class:`NotFoundError` when nowhere."""
        with self._connect() as db:
            return _rollback_step(db, alias)

    def rollback(self, alias: str, *, actor: str = "", expect: str | None = None) -> AliasChange:
        """Point ``alias`` one step back in its history. Each rollback undoes one promotion, so a second
        one goes to the model before that, never back to the model just rolled back.

        The mechanism only, as :meth:`set_alias` is: edges roll back through
        :func:`helpline.platform.promotion.rollback`, which holds the step to the promotion rule. ``expect``
        is the target that rule approved; the rollback is refused if the alias moved meanwhile."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            step = _rollback_step(db, alias)
            if expect is not None and step.model_name != expect:
                raise ConfigError(
                    f"alias {alias!r} changed while it was being rolled back (it would now go to {step.model_name})",
                    hint="check `helpline models list` and roll back again",
                )
            return _point(db, alias, step.model_name, actor=actor, action="rollback")

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


def _refuse_taken(db: sqlite3.Connection, name: str, *, replace: bool) -> None:
    row = db.execute("SELECT * FROM models WHERE name = ?", (name,)).fetchone()
    if row is None:
        return
    uses = _uses(db, _model(row))
    if replace and not uses:
        return
    free = next(f"{name}-{i}" for i in range(2, 10_000) if not _exists(db, f"{name}-{i}"))
    if uses:
        raise ModelNameTakenError(
            f"{name!r} already exists in the registry and is in use ({'; '.join(uses)}), so its weights stay",
            hint=f"register the new model under a new name (e.g. {free}) and promote that one through the gate",
        )
    raise ModelNameTakenError(
        f"{name!r} already exists in the registry ({row['kind']} at {row['path']})",
        hint=f"choose a new name (e.g. {free})",
    )


def _uses(db: sqlite3.Connection, record: ModelRecord) -> list[str]:
    """What refers to a model by its name: aliases, alias histories and a gate verdict."""
    aliases = [r["alias"] for r in db.execute("SELECT alias FROM aliases WHERE model_name = ?", (record.name,))]
    uses = [f"alias {a!r} points at it" for a in sorted(aliases)]
    history = db.execute(
        "SELECT DISTINCT alias FROM alias_history WHERE model_name = ? OR previous = ? ORDER BY alias",
        (record.name, record.name),
    ).fetchall()
    uses += [f"it is in the history of {r['alias']!r} (a rollback may return to it)" for r in history
             if r["alias"] not in aliases]  # fmt: skip
    gate = record.metadata.get("gate")
    if gate:
        uses.append(f"it has a {'passed' if gate.get('passed') else 'failed'} gate record")
    return uses


def _exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is not None


def _point(
    db: sqlite3.Connection, alias: str, target: str, *, actor: str, action: Literal["set", "rollback"]
) -> AliasChange:
    """Point ``alias`` at ``target`` and write the change to its history."""
    now = time.time()
    prev = db.execute("SELECT model_name FROM aliases WHERE alias = ?", (alias,)).fetchone()
    previous = prev["model_name"] if prev else None
    db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (alias, target, now))
    db.execute(
        "INSERT INTO alias_history (alias, model_name, previous, at, actor, action) VALUES (?, ?, ?, ?, ?, ?)",
        (alias, target, previous, now, actor, action),
    )
    return AliasChange(alias=alias, model_name=target, previous=previous, at=now, actor=actor, action=action)


def _rollback_step(db: sqlite3.Connection, alias: str) -> RollbackStep:
    current = db.execute("SELECT model_name FROM aliases WHERE alias = ?", (alias,)).fetchone()
    if current is None:
        raise NotFoundError(f"alias {alias!r} is not set", hint="promote a model first: `helpline models promote`")
    rows = db.execute("SELECT model_name, action FROM alias_history WHERE alias = ? ORDER BY id", (alias,)).fetchall()
    served = _served(rows)
    if len(served) < 2:
        raise NotFoundError(
            f"alias {alias!r} has no earlier model to roll back to (it serves the first model its history holds, "
            "every later promotion having been rolled back)",
            hint="promote the model you want instead: `helpline models promote NAME` (it needs a passing gate)",
        )
    return RollbackStep(
        alias=alias, current=current["model_name"], model_name=served[-2], undoes_promotion=rows[-1]["action"] == "set"
    )


def _served(history: list[sqlite3.Row]) -> list[str]:
    """What an alias has served, oldest first, with every rolled-back promotion taken out: the last is what
    it serves now, the one before it is where the next rollback goes."""
    served: list[str] = []
    for row in history:
        if row["action"] == "rollback" and served:
            served.pop()
        if row["model_name"] and (not served or served[-1] != row["model_name"]):
            served.append(row["model_name"])
    return served


def _model(row: sqlite3.Row) -> ModelRecord:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"])
    return ModelRecord(**data)
