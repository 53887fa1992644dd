"""Alembic's entry point. ``store_db.migrate`` passes an open connection (holding the migration lock) in
``config.attributes["connection"]``; by hand (``alembic -c alembic.ini upgrade head``), ``sqlalchemy.url`` names the
database."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from helpline.serving.gateway.store_schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").connect() as opened:
        context.configure(connection=opened, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
