"""The gateway database's schema through Alembic: the migrations build exactly the tables the store queries, a
SQLite file from before Alembic (today's, or an older one without the later columns) is adopted in place with its
rows, replicas opening one fresh database at once all come up, and a wrong or unreachable ``database_url`` says
what to do."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.settings import Settings, load_settings
from helpline.serving.factory import open_gateway_store
from helpline.serving.gateway.store import GatewayStore, hash_key
from helpline.serving.gateway.store_db import MIGRATIONS, DatabaseUnavailableError, masked
from helpline.serving.gateway.store_schema import metadata
from helpline.testing.postgres import free_port, open_at_once

#: The schema the gateway created with sqlite3 before Alembic (helpline/serving/gateway/store_schema.py,
#: store_checks.py and store_connectors.py as they were), columns added since included.
PRE_ALEMBIC_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key_hash TEXT UNIQUE NOT NULL, prefix TEXT NOT NULL, role TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, revoked_at REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS conversations (
    response_id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, at REAL NOT NULL, key_id INTEGER, role TEXT NOT NULL,
    model TEXT NOT NULL, served_model TEXT NOT NULL, adapter TEXT, messages TEXT NOT NULL, passages TEXT NOT NULL,
    answer TEXT NOT NULL, abstained INTEGER NOT NULL, latency_ms REAL NOT NULL, status TEXT NOT NULL DEFAULT 'ok',
    withdrawn TEXT, verification TEXT, origins TEXT, internal INTEGER
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, response_id TEXT NOT NULL, at REAL NOT NULL, key_id INTEGER,
    rating TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '', correction TEXT
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS correction_checks (
    response_id TEXT PRIMARY KEY, at REAL NOT NULL, model TEXT NOT NULL, fixed INTEGER,
    outcome TEXT NOT NULL DEFAULT '', served TEXT NOT NULL DEFAULT '', expect TEXT NOT NULL DEFAULT '[]', backed INTEGER
);
CREATE TABLE IF NOT EXISTS connectors (
    name TEXT PRIMARY KEY, source TEXT NOT NULL, every_s REAL NOT NULL, actor TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL, last_at REAL, last_status TEXT NOT NULL DEFAULT '', last_summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS conversations_at ON conversations (at);
CREATE INDEX IF NOT EXISTS conversations_conversation ON conversations (conversation_id, key_id);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback (response_id, id);
"""
#: An older file: before the withdrawn/verification/origins/internal and backed columns, the connectors and the
#: indexes.
OLDER_SCHEMA = (
    PRE_ALEMBIC_SCHEMA.split("CREATE TABLE IF NOT EXISTS connectors")[0]
    .replace(", withdrawn TEXT, verification TEXT, origins TEXT, internal INTEGER", "")
    .replace(", backed INTEGER", "")
)
TURN = (
    "INSERT INTO conversations (response_id, conversation_id, at, key_id, role, model, served_model, adapter, messages,"
    " passages, answer, abstained, latency_ms, status) VALUES ('r1', 'c1', 1.0, 1, 'customer', 'helpline-support',"
    " 'base', NULL, '[{\"role\": \"user\", \"content\": \"How do I return an item?\"}]', '[]', 'Within 30 days.', 0,"
    " 12.0, 'ok')"
)


def _old_file(path: Path, schema: str) -> str:
    """A gateway database as an earlier release left it: a key, a turn rated down with a correction, a setting,
    a correction check. Returns the key."""
    key = "hl-old-key-0123456789"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
        db.execute(
            "INSERT INTO api_keys (key_hash, prefix, role, name, created_at) VALUES (?, ?, 'customer', 'old', 1.0)",
            (hash_key(key), key[:10]),
        )
        db.execute(TURN)
        db.execute(
            "INSERT INTO feedback (response_id, at, key_id, rating, correction) VALUES ('r1', 2.0, 1, 'down', 'Fix.')"
        )
        db.execute("INSERT INTO settings VALUES ('canary_share', '0.2')")
        db.execute("INSERT INTO correction_checks (response_id, at, model, fixed) VALUES ('r1', 3.0, 'm', 1)")
        db.execute("INSERT INTO audit (at, actor, action) VALUES (1.0, 'cli', 'key.create')")
    return key


def _tables_and_columns(path: Path) -> dict[str, set[str]]:
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: {c[1] for c in db.execute(f"PRAGMA table_info({n})")} for n in names if not n.startswith("sqlite_")}


@pytest.mark.parametrize("schema", [PRE_ALEMBIC_SCHEMA, OLDER_SCHEMA], ids=["todays", "older"])
def test_a_sqlite_file_from_before_alembic_is_adopted_in_place_with_its_rows(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "gateway.sqlite"
    key = _old_file(path, schema)

    store = GatewayStore(path)

    assert store.lookup(key) is not None and store.lookup(key).name == "old"  # type: ignore[union-attr]
    old = store.turn("r1")
    assert old["answer"] == "Within 30 days." and old["correction"] == "Fix." and old["origins"] is None
    assert store.get_setting("canary_share") == "0.2" and store.audit_log()[0]["action"] == "key.create"
    [item] = store.review_items("reviewed", limit=5)
    assert item["check"]["fixed"] is True and item["check"]["backed"] is None
    # new writes work, into the columns and tables an older file lacked
    _, new_key = store.create_key("staff", name="new")
    assert new_key.id == 2
    store.record_turn(
        response_id="r2", conversation_id="c1", at=5.0, key_id=1, role="customer", model="helpline-support",
        served_model="base", adapter=None, messages=[], passages=[], answer="Again.", abstained=0, latency_ms=1.0,
        withdrawn="draft", verification={"grounded": False}, origins=["client", "gateway"], internal=0,
    )  # fmt: skip
    assert store.turn("r2")["origins"] == ["client", "gateway"] and store.answers_in("c1", key_id=1) == {
        "Within 30 days.", "Again."}  # fmt: skip
    store.save_connector("help", source="x.zip", every_s=60, actor="cli")
    store.record_check("r1", model="m2", fixed=True, outcome="", served="", expect=[], backed=True)
    assert _tables_and_columns(path) == {t.name: {c.name for c in t.columns} for t in metadata.sorted_tables} | {
        "alembic_version": {"version_num"}}  # fmt: skip
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(_head(),)]
        indexes = db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall()
        expected = {"conversations_at", "conversations_conversation", "feedback_response", "jobs_state"}
        assert {r[0] for r in indexes} == expected
    assert GatewayStore(path).turn("r1")["answer"] == "Within 30 days."  # reopening changes nothing


def _head() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_the_migrations_build_exactly_the_tables_the_store_queries(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "gateway.sqlite")
    with store.engine.connect() as db:
        assert compare_metadata(MigrationContext.configure(db), metadata) == []
        assert MigrationContext.configure(db).get_current_revision() == _head()


def test_the_migrations_ship_as_package_data_with_their_template() -> None:
    assert (MIGRATIONS / "env.py").is_file() and (MIGRATIONS / "script.py.mako").is_file()
    assert _head() == "0002"


def test_replicas_opening_one_fresh_sqlite_file_at_once_all_migrate_it_and_write(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite"
    assert open_at_once(path, None, 4) == [(0, "")] * 4
    assert sorted(k.name for k in GatewayStore(path).list_keys()) == [f"replica-{n}" for n in range(4)]


# database_url ----------------------------------------------------------------------------------


def test_a_database_url_that_is_not_postgresql_is_refused_naming_the_setting_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as e:  # what the CLI prints
        load_settings(database_url="mysql://app:s3cret@db/helpline")
    assert "database_url is not a PostgreSQL address" in str(e.value) and "s3cret" not in str(e.value)
    with pytest.raises(ValidationError):
        Settings(database_url="sqlite:///elsewhere.sqlite")
    for good in ("postgresql://u:p@db:5432/h", "postgres://db/h", "postgresql+psycopg://u@db/h"):
        assert Settings(database_url=good).database_url == good


def test_an_unreachable_postgresql_is_a_clear_error_naming_database_url_without_the_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://helpline:s3cret@127.0.0.1:{free_port()}/helpline"  # nothing listens there
    with pytest.raises(DatabaseUnavailableError) as e:
        GatewayStore(tmp_path / "gateway.sqlite", url=url)
    message = str(e.value)
    assert "database_url" in message and "127.0.0.1" in message and "s3cret" not in message
    assert "unset database_url" in (e.value.hint or "") and e.value.http_status == 503


def test_an_unreadable_database_url_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="database_url is not a usable PostgreSQL address"):
        GatewayStore(tmp_path / "gateway.sqlite", url="postgresql://u@db:notaport/h")


def test_the_gateway_factory_opens_database_url_when_it_is_set_and_the_workspace_file_otherwise(
    tmp_path: Path,
) -> None:
    pytest.importorskip("psycopg")
    local = open_gateway_store(Context(Settings(workspace=tmp_path / "ws")))
    assert local.url is None and local.path == tmp_path / "ws" / "gateway.sqlite"
    port = free_port()
    url = f"postgresql://helpline:s3cret@127.0.0.1:{port}/helpline"
    with pytest.raises(DatabaseUnavailableError, match="database_url"):
        open_gateway_store(Context(Settings(workspace=tmp_path / "ws", database_url=url)))
    assert masked(url) == f"postgresql+psycopg://helpline:***@127.0.0.1:{port}/helpline"
