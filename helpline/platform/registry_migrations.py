"""The registry file's schema migrations: step ``i`` upgrades schema version ``i`` to ``i + 1``
(``PRAGMA user_version``), run in place when a registry is opened."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from helpline.platform.errors import ConfigError


def _detectors_get_their_kind(db: sqlite3.Connection) -> None:
    """Schema 1: a hallucination detector was a ``base`` whose metadata said ``role: detector``; it becomes
    kind ``detector`` (its metadata is kept as it was)."""
    for row in db.execute("SELECT name, metadata FROM models WHERE kind = 'base'").fetchall():
        if json.loads(row["metadata"] or "{}").get("role") == "detector":
            db.execute("UPDATE models SET kind = 'detector' WHERE name = ?", (row["name"],))


def _alias_history_marks_rollbacks(db: sqlite3.Connection) -> None:
    """Schema 2: ``alias_history.action`` tells a rollback from a promotion (``set``). An older file wrote its
    rollbacks as plain changes: an entry that points the alias straight back where the entry before it came
    from is taken for one. A re-promotion of the model just replaced reads the same; taken for a rollback,
    the next rollback finds nothing to return to, which is the safe side."""
    if "action" not in {row["name"] for row in db.execute("PRAGMA table_info(alias_history)")}:
        db.execute("ALTER TABLE alias_history ADD COLUMN action TEXT NOT NULL DEFAULT 'set'")
    last: dict[str, sqlite3.Row] = {}
    for row in db.execute("SELECT id, alias, model_name, previous FROM alias_history ORDER BY id").fetchall():
        before = last.get(row["alias"])
        if before is not None and (row["model_name"], row["previous"]) == (before["previous"], before["model_name"]):
            db.execute("UPDATE alias_history SET action = 'rollback' WHERE id = ?", (row["id"],))
        last[row["alias"]] = row


#: Step ``i`` upgrades a registry file from schema version ``i`` to ``i + 1`` (``PRAGMA user_version``).
#: Append only: a step, once released, runs on files already out there.
MIGRATIONS = (_detectors_get_their_kind, _alias_history_marks_rollbacks)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file up to ``len(MIGRATIONS)``; a file written by a newer helpline is refused."""
    if db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
        return  # the usual open: no write lock taken
    db.execute("BEGIN IMMEDIATE")  # two processes opening an old file at once migrate it once
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise ConfigError(
            f"registry {path} has schema version {version}; this helpline reads up to {len(MIGRATIONS)}",
            hint="upgrade helpline to the version that wrote it, or use another workspace (the `workspace` setting)",
        )
    for step in MIGRATIONS[version:]:
        step(db)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
