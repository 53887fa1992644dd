"""A registry file written before detectors had their own kind is upgraded in place when opened."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.registry import Registry

# The schema as helpline wrote it before schema versions (PRAGMA user_version 0): no kind constraint.
OLD_SCHEMA = """
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    base_model TEXT,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE aliases (
    alias TEXT PRIMARY KEY,
    model_name TEXT NOT NULL REFERENCES models(name),
    updated_at REAL NOT NULL
);
CREATE TABLE alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alias TEXT NOT NULL,
    model_name TEXT,
    previous TEXT,
    at REAL NOT NULL,
    actor TEXT NOT NULL DEFAULT ''
);
CREATE TABLE kb_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    added INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
"""

DETECTOR_META = {"role": "detector", "bundled": True, "validation": {"qa": {"auroc": 0.99}}}
OLD_MODELS = [
    ("smollm2", "base", "/m/smollm2", None, 1.0, {"chat": True}),
    ("support-v1", "adapter", "/m/support-v1", "smollm2", 2.0, {"gate": {"passed": True}}),
    ("minilm", "embedder", "/m/minilm", None, 3.0, {}),
    ("helpline-detector", "base", "/m/helpline-detector", None, 4.0, DETECTOR_META),
    ("teacher", "base", "/m/teacher", None, 5.0, {"role": "teacher"}),  # another role is not a detector
]


def _tables(path: Path) -> dict[str, list[tuple]]:
    with closing(sqlite3.connect(path)) as db, db:
        names = ("models", "aliases", "alias_history", "kb_versions")
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in names}


def _user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db, db:
        return db.execute("PRAGMA user_version").fetchone()[0]


@pytest.fixture
def old_registry(tmp_path: Path) -> Path:
    """A registry file as helpline wrote it when a detector was a base model with ``role: detector``."""
    path = tmp_path / "registry.sqlite"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.executemany(
        "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?)",
        [(*row[:5], json.dumps(row[5])) for row in OLD_MODELS],
    )
    db.execute("INSERT INTO aliases VALUES ('production', 'support-v1', 6.0)")
    db.execute(
        "INSERT INTO alias_history (alias, model_name, previous, at, actor)"
        " VALUES ('production', 'support-v1', NULL, 6.0, 'cli')"
    )
    db.execute(
        "INSERT INTO kb_versions (created_at, added, updated, deleted, content_hash) VALUES (7.0, 30, 0, 0, 'ab')"
    )
    db.commit()
    db.close()
    return path


def test_opening_an_old_registry_turns_its_detector_into_a_detector(old_registry: Path) -> None:
    before = _tables(old_registry)
    registry = Registry(old_registry)
    detector = registry.get_model("helpline-detector")
    assert detector.kind == "detector" and detector.metadata == DETECTOR_META
    with pytest.raises(ConfigError, match="'helpline-detector' is a hallucination detector, not a chat model"):
        registry.chat_model("helpline-detector")
    with pytest.raises(ConfigError, match="not a chat model"):
        registry.set_alias("canary", "helpline-detector")
    after = _tables(old_registry)
    changed = [row for row in before["models"] if row not in after["models"]]
    assert [row[0] for row in changed] == ["helpline-detector"]  # every other row is as it was
    unchanged = ("aliases", "kb_versions")
    assert {t: after[t] for t in unchanged} == {t: before[t] for t in unchanged}
    assert [row[:-1] for row in after["alias_history"]] == before["alias_history"]  # schema 2 adds `action`
    assert [row[-1] for row in after["alias_history"]] == ["set"]
    assert [m.kind for m in registry.list_models()] == ["base", "adapter", "embedder", "detector", "base"]
    assert registry.chat_model("production").name == "support-v1" and registry.base_of("production").name == "smollm2"
    assert _user_version(old_registry) == 2


def test_a_second_open_changes_nothing(old_registry: Path) -> None:
    Registry(old_registry)
    migrated = _tables(old_registry)
    with (
        closing(sqlite3.connect(old_registry)) as db,
        db,
    ):  # a row the migration would have changed, written after it ran
        db.execute("INSERT INTO models VALUES ('late', 'base', '/m/late', NULL, 9.0, '{\"role\": \"detector\"}')")
    Registry(old_registry)
    again = _tables(old_registry)
    assert {row[0]: row[1] for row in again["models"]}["late"] == "base"  # the migration did not run again
    assert [row for row in again["models"] if row[0] != "late"] == migrated["models"]
    assert _user_version(old_registry) == 2


def test_a_new_registry_starts_at_the_current_schema_version(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "fresh.sqlite")
    registry.register_model("helpline-detector", kind="detector", path=tmp_path / "d")
    assert _user_version(registry.db_path) == 2
    assert Registry(registry.db_path).get_model("helpline-detector").kind == "detector"


def test_a_registry_from_a_newer_helpline_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    Registry(path)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError, match="schema version 99; this helpline reads up to 2") as err:
        Registry(path)
    assert "upgrade helpline" in err.value.hint


def test_a_rollback_written_before_rollbacks_were_marked_is_not_undone_by_the_next_one(old_registry: Path) -> None:
    """An old file's history holds its rollbacks as plain changes; the next rollback must not read the last
    one as a promotion to undo (that put the model just rolled back live again)."""
    with closing(sqlite3.connect(old_registry)) as db, db:
        db.executemany(
            "INSERT INTO alias_history (alias, model_name, previous, at, actor) VALUES ('production', ?, ?, ?, 'cli')",
            [("smollm2", "support-v1", 7.0), ("support-v1", "smollm2", 8.0)],
        )  # smollm2 promoted over support-v1, then `helpline models rollback`
    registry = Registry(old_registry)
    with pytest.raises(NotFoundError, match="no earlier model"):
        registry.rollback("production")
    assert registry.aliases()["production"] == "support-v1"


# Adopted by Alembic ---------------------------------------------------------------------------

# The schema as helpline wrote it at user_version 2, the last before Alembic: alias_history has `action`.
SCHEMA_2 = """
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


def _file_at(path: Path, version: int) -> Path:
    """A registry file as helpline left it at ``PRAGMA user_version`` ``version``, written with raw sqlite3: its
    history holds a promotion of m2 over m1 and then an entry back to m1, which only schema 2 marks a rollback."""
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA_2 if version == 2 else OLD_SCHEMA)
        detector_kind = "base" if version == 0 else "detector"
        models = [(*row[:5], json.dumps(row[5])) for row in OLD_MODELS]
        models[3] = ("helpline-detector", detector_kind, *models[3][2:])
        db.executemany("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?)", models)
        db.execute("INSERT INTO models VALUES ('m2', 'base', '/m/m2', NULL, 5.5, '{}')")
        db.execute("INSERT INTO aliases VALUES ('production', 'smollm2', 8.0)")
        db.executemany(
            "INSERT INTO alias_history (alias, model_name, previous, at, actor) VALUES ('production', ?, ?, ?, 'cli')",
            [("smollm2", None, 6.0), ("m2", "smollm2", 7.0), ("smollm2", "m2", 8.0)],
        )  # at version 2 the last entry was written as a promotion (`set`), and stays one
        db.execute(f"PRAGMA user_version = {version}")
    return path


@pytest.mark.parametrize("version", [0, 1, 2])
def test_a_registry_file_at_any_schema_version_is_adopted_in_place(tmp_path: Path, version: int) -> None:
    path = _file_at(tmp_path / "registry.sqlite", version)

    registry = Registry(path)

    assert registry.get_model("helpline-detector").kind == "detector"
    assert [m.name for m in registry.list_models()] == [row[0] for row in OLD_MODELS] + ["m2"]  # every row kept
    actions = [h.action for h in registry.alias_history("production")]
    assert actions == ["set", "set", "set" if version == 2 else "rollback"]  # only the steps it lacked ran
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT version_num FROM registry_alembic_version").fetchall() == [("0001",)]
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    # it takes new writes, and a second open changes nothing
    registry.register_model("m3", kind="base", path=tmp_path / "m3")
    registry.set_alias("production", "m3", actor="cli")
    assert registry.record_kb_version(added=1, updated=0, deleted=0, content_hash="x").id == 1
    before = _tables(path)
    assert Registry(path).aliases() == {"production": "m3"} and _tables(path) == before
