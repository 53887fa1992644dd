"""Baseline: the registry as the releases before Alembic left it, adopted in place.

A fresh database gets every table. A SQLite registry file from before Alembic (no ``registry_alembic_version``)
keeps its rows: tables it lacks are created, then the schema steps of ``PRAGMA user_version`` it has not had yet
run (``helpline.platform.registry_migrations``: detectors get their kind, alias history marks rollbacks) and it is
left at user_version 2; then Alembic stamps it. PostgreSQL never held a registry before, so it only gets the
tables. The tables are written out here, not imported, so that this revision stays what it was when later ones
change ``registry_schema``.

Revision ID: 0001
Revises:
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from helpline.platform.registry_migrations import adopt

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_meta = sa.MetaData()

TABLES = [
    sa.Table(
        "models", _meta,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("base_model", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False, server_default=sa.text("'{}'")),
    ),
    sa.Table(
        "aliases", _meta,
        sa.Column("alias", sa.Text, primary_key=True),
        sa.Column("model_name", sa.Text, sa.ForeignKey("models.name"), nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    ),
    sa.Table(
        "alias_history", _meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text),
        sa.Column("previous", sa.Text),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("actor", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("action", sa.Text, nullable=False, server_default=sa.text("'set'")),
        sqlite_autoincrement=True,
    ),
    sa.Table(
        "kb_versions", _meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("added", sa.Integer, nullable=False),
        sa.Column("updated", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=sa.text("''")),
        sqlite_autoincrement=True,
    ),
]  # fmt: skip


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    for table in TABLES:
        if table.name not in existing:
            table.create(bind)
    if bind.dialect.name == "sqlite":
        adopt(bind)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table.name)
