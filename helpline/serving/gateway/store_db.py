"""The gateway database's engine: SQLite in the workspace by default, PostgreSQL when ``database_url`` is set, and
its schema brought up to date by Alembic (``migrations/``) when a store opens it.

The engine, the migration lock and the upsert are the platform's (:mod:`helpline.platform.database`, shared with the
registry, whose tables may live in the same PostgreSQL database); this module names the gateway's Alembic scripts.
A SQLite file from before Alembic is adopted by the first revision (see its docstring).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from helpline.platform import database
from helpline.platform.database import (
    STORE_ERRORS,
    DatabaseUnavailableError,
    engine_for,
    masked,
    postgres_url,
    upsert,
)

__all__ = [
    "MIGRATIONS", "STORE_ERRORS", "DatabaseUnavailableError", "engine_for", "masked", "migrate", "postgres_url",
    "upsert",
]  # fmt: skip

MIGRATIONS = Path(__file__).parent / "migrations"


def migrate(engine: Engine, url: str | None) -> None:
    """Bring the gateway's database up to the newest revision (see :mod:`helpline.platform.database`)."""
    database.migrate(engine, url, scripts=MIGRATIONS, what="the gateway's database")
