"""Alembic's entry point. ``helpline.platform.database.migrate`` passes an open connection (holding the migration
lock) in ``config.attributes["connection"]``; by hand (``alembic -c alembic.ini upgrade head``), ``sqlalchemy.url``
names the database. The registry's revision is kept in its own table, ``registry_alembic_version``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from helpline.platform.registry_schema import metadata

VERSION_TABLE = "registry_alembic_version"

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(
        connection=connection, target_metadata=metadata, render_as_batch=True, version_table=VERSION_TABLE
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").connect() as opened:
        context.configure(
            connection=opened, target_metadata=metadata, render_as_batch=True, version_table=VERSION_TABLE
        )
        with context.begin_transaction():
            context.run_migrations()
