"""Engines for helpline's own databases (the gateway's store, the registry): SQLite in the workspace by default,
PostgreSQL when ``database_url`` is set, each database's schema brought up to date by its own Alembic scripts when
it is opened.

Opening, in this order (safe when several processes open one fresh database at once):
read the schema's revision without a lock → at the newest revision: done → otherwise take the migration lock
(SQLite: ``BEGIN IMMEDIATE``, the database's own write lock; PostgreSQL: a transaction-scoped advisory lock) →
Alembic upgrades from whatever revision it reads now (nothing, when another process migrated meanwhile) → commit,
which releases the lock.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, NullPool, Table, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from helpline.platform.errors import ConfigError, HelplineError

#: Any error a statement can raise: SQLAlchemy's, and sqlite3's own (a test stands in for a full disk so).
STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, sqlite3.Error)
#: The advisory lock taken around a migration on PostgreSQL (any fixed number; "helpline" in ASCII). One lock for
#: every helpline database: migrations are rare and short, so they may as well wait for each other.
MIGRATION_LOCK = 0x68656C706C696E65
_SETTING = "database_url"
_URL_HINT = "set database_url to e.g. postgresql://helpline:PASSWORD@HOST:5432/helpline, or unset it for SQLite"


class DatabaseUnavailableError(HelplineError):
    """A helpline database on PostgreSQL (``database_url``) cannot be reached or opened."""

    http_status = 503


def engine_for(
    path: Path, url: str | None, *, busy_timeout_s: float, foreign_keys: bool = False, keep_open: bool = True
) -> Engine:
    """An engine on the SQLite file ``path`` (WAL, waiting up to ``busy_timeout_s`` for another writer), or on the
    PostgreSQL database ``url`` when one is given.

    SQLite only: ``foreign_keys`` enforces the schema's REFERENCES; ``keep_open=False`` closes each connection
    after use instead of pooling it, so no ``-wal`` file stays beside the database between calls (the registry,
    whose file backups and restores move around)."""
    if url is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            f"sqlite:///{path}",
            connect_args={"timeout": busy_timeout_s},
            **({} if keep_open else {"poolclass": NullPool}),
        )
        event.listen(engine, "connect", _sqlite_pragmas_on if foreign_keys else _sqlite_pragmas)
        return engine
    try:
        parsed = make_url(postgres_url(url))
        # Up to 30 connections a replica (store calls run on the gateway's worker threads); each is pinged when it
        # leaves the pool, so a restarted server costs a reconnect, not a failed request.
        return create_engine(
            parsed, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=30,
            connect_args={"connect_timeout": 10},
        )  # fmt: skip
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise ConfigError(f"{_SETTING} is not a usable PostgreSQL address ({e})", hint=_URL_HINT) from e
    except ImportError as e:
        raise ConfigError(
            f"{_SETTING} names PostgreSQL, but its driver is not installed ({e})",
            hint="pip install 'helpline[shared]' (psycopg), or unset database_url for the workspace's SQLite file",
        ) from e


def postgres_url(url: str) -> str:
    """``url`` with the psycopg 3 driver named (``postgresql://`` alone would mean psycopg2, which is not used)."""
    return re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql+psycopg://", url)


def masked(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        return make_url(postgres_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unreadable address)"


def _sqlite_pragmas(dbapi: sqlite3.Connection, _record: Any) -> None:
    # WAL: readers never wait for the writer. secure_delete: erased rows are overwritten, not left in free pages.
    dbapi.execute("PRAGMA journal_mode=WAL")
    dbapi.execute("PRAGMA secure_delete=ON")


def _sqlite_pragmas_on(dbapi: sqlite3.Connection, record: Any) -> None:
    _sqlite_pragmas(dbapi, record)
    dbapi.execute("PRAGMA foreign_keys=ON")


def migrate(
    engine: Engine, url: str | None, *, scripts: Path, version_table: str = "alembic_version", what: str
) -> None:
    """Bring the database up to the newest revision of the Alembic scripts in ``scripts``, whose revision Alembic
    keeps in ``version_table`` (see the module docstring for the order and the lock). ``what`` names the database
    in the error raised when PostgreSQL cannot be opened."""
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()
            if current == _head(scripts):
                return
        with engine.connect() as conn:
            lock(conn)
            config = _config(scripts)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
    except SQLAlchemyError as e:
        if url is None:
            raise
        raise DatabaseUnavailableError(
            f"{what} at {masked(url)} ({_SETTING}) could not be opened: {_first_line(e)}",
            hint="check that PostgreSQL runs and the address, user, password and database name in database_url "
            "are right (the database must exist: createdb); or unset database_url for the workspace's SQLite file",
        ) from e


def lock(conn: Connection, key: int = MIGRATION_LOCK) -> None:
    """Begin a write transaction on ``conn`` that others wait for until it ends: SQLite's ``BEGIN IMMEDIATE``
    (the whole file), or PostgreSQL's transaction-scoped advisory lock ``key``."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _first_line(e: SQLAlchemyError) -> str:
    return str(getattr(e, "orig", None) or e).strip().splitlines()[0]


def _config(scripts: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(scripts))
    return config


@functools.cache
def _head(scripts: Path) -> str | None:
    return ScriptDirectory.from_config(_config(scripts)).get_current_head()


def upsert(conn: Connection, table: Table, values: dict[str, Any], *, keep: tuple[str, ...] = ()) -> None:
    """Insert ``values`` into ``table``, or update the row with the same primary key, leaving the columns ``keep``
    as they were (SQLite and PostgreSQL both spell it ``ON CONFLICT ... DO UPDATE``)."""
    insert = (sqlite_insert if conn.dialect.name == "sqlite" else pg_insert)(table).values(**values)
    key = [c.name for c in table.primary_key]
    changed = {name: insert.excluded[name] for name in values if name not in key and name not in keep}
    conn.execute(insert.on_conflict_do_update(index_elements=key, set_=changed))
