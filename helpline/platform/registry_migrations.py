"""The registry's schema steps from before Alembic: step ``i`` upgrades a SQLite registry file from schema version
``i`` to ``i + 1`` (``PRAGMA user_version``). The first Alembic revision (``registry_alembic/versions``) runs the
steps a file still lacks and leaves it at ``len(MIGRATIONS)``; later changes are Alembic revisions, never steps
here. A file at a higher version was written by a newer helpline and is refused."""

from __future__ import annotations

import json

from sqlalchemy import Connection, text

from helpline.platform.errors import ConfigError


def _detectors_get_their_kind(db: Connection) -> None:
    """Schema 1: a hallucination detector was a ``base`` whose metadata said ``role: detector``; it becomes
    kind ``detector`` (its metadata is kept as it was)."""
    for row in db.execute(text("SELECT name, metadata FROM models WHERE kind = 'base'")).mappings().all():
        if json.loads(row["metadata"] or "{}").get("role") == "detector":
            db.execute(text("UPDATE models SET kind = 'detector' WHERE name = :name"), {"name": row["name"]})


def _alias_history_marks_rollbacks(db: Connection) -> None:
    """Schema 2: ``alias_history.action`` tells a rollback from a promotion (``set``). An older file wrote its
    rollbacks as plain changes: an entry that points the alias straight back where the entry before it came
    from is taken for one. A re-promotion of the model just replaced reads the same; taken for a rollback,
    the next rollback finds nothing to return to, which is the safe side."""
    if "action" not in {row["name"] for row in db.exec_driver_sql("PRAGMA table_info(alias_history)").mappings()}:
        db.exec_driver_sql("ALTER TABLE alias_history ADD COLUMN action TEXT NOT NULL DEFAULT 'set'")
    last: dict[str, dict] = {}
    query = text("SELECT id, alias, model_name, previous FROM alias_history ORDER BY id")
    for row in db.execute(query).mappings().all():
        before = last.get(row["alias"])
        if before is not None and (row["model_name"], row["previous"]) == (before["previous"], before["model_name"]):
            db.execute(text("UPDATE alias_history SET action = 'rollback' WHERE id = :id"), {"id": row["id"]})
        last[row["alias"]] = dict(row)


#: Step ``i`` upgrades a registry file from schema version ``i`` to ``i + 1`` (``PRAGMA user_version``).
#: Closed: the registry's schema changes by Alembic revisions now.
MIGRATIONS = (_detectors_get_their_kind, _alias_history_marks_rollbacks)


def legacy_version(db: Connection, path: object) -> int:
    """The SQLite file's ``PRAGMA user_version``; a file written by a newer helpline is refused."""
    version = int(db.exec_driver_sql("PRAGMA user_version").scalar() or 0)
    if version > len(MIGRATIONS):
        raise ConfigError(
            f"registry {path} has schema version {version}; this helpline reads up to {len(MIGRATIONS)}",
            hint="upgrade helpline to the version that wrote it, or use another workspace (the `workspace` setting)",
        )
    return version


def adopt(db: Connection) -> None:
    """Run the steps a SQLite registry file lacks and mark it as at the last one (inside the caller's transaction,
    which holds the file's write lock)."""
    for step in MIGRATIONS[legacy_version(db, db.engine.url.database) :]:
        step(db)
    db.exec_driver_sql(f"PRAGMA user_version = {len(MIGRATIONS)}")
