"""Baseline: the gateway database as the releases before Alembic left it, adopted in place.

A fresh database gets every table and index. A SQLite file from before Alembic (no ``alembic_version``) keeps its
rows: tables it lacks are created, columns added in later releases (``conversations.withdrawn``, ``verification``,
``origins``, ``internal``; ``correction_checks.backed``) are added as NULL, missing indexes are created; then Alembic
stamps it. The tables are written out here, not imported, so that this revision stays what it was when later ones
change ``store_schema``.

Revision ID: 0001
Revises:
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_meta = sa.MetaData()


def _empty(default: str = "") -> sa.TextClause:
    return sa.text(f"'{default}'")


def _table(name: str, *columns: sa.Column | sa.Index, autoincrement: bool = False) -> sa.Table:
    return sa.Table(name, _meta, *columns, **({"sqlite_autoincrement": True} if autoincrement else {}))


TABLES = [
    _table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_hash", sa.Text, unique=True, nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("revoked_at", sa.Double),
        autoincrement=True,
    ),
    _table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("detail", sa.Text, nullable=False, server_default=_empty("{}")),
        autoincrement=True,
    ),
    _table(
        "conversations",
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("key_id", sa.Integer),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("served_model", sa.Text, nullable=False),
        sa.Column("adapter", sa.Text),
        sa.Column("messages", sa.Text, nullable=False),
        sa.Column("passages", sa.Text, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("abstained", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Double, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default=_empty("ok")),
        sa.Column("withdrawn", sa.Text),
        sa.Column("verification", sa.Text),
        sa.Column("origins", sa.Text),
        sa.Column("internal", sa.Integer),
        sa.Index("conversations_at", "at"),
        sa.Index("conversations_conversation", "conversation_id", "key_id"),
    ),
    _table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("response_id", sa.Text, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("key_id", sa.Integer),
        sa.Column("rating", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("correction", sa.Text),
        sa.Index("feedback_response", "response_id", "id"),
        autoincrement=True,
    ),
    _table(
        "settings",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    ),
    _table(
        "correction_checks",
        sa.Column("response_id", sa.Text, primary_key=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("fixed", sa.Integer),
        sa.Column("outcome", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("served", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("expect", sa.Text, nullable=False, server_default=_empty("[]")),
        sa.Column("backed", sa.Integer),
    ),
    _table(
        "connectors",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("every_s", sa.Double, nullable=False),
        sa.Column("actor", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("added_at", sa.Double, nullable=False),
        sa.Column("last_at", sa.Double),
        sa.Column("last_status", sa.Text, nullable=False, server_default=_empty()),
        sa.Column("last_summary", sa.Text, nullable=False, server_default=_empty("{}")),
    ),
]


def upgrade() -> None:
    bind = op.get_bind()
    found = sa.inspect(bind)
    existing = set(found.get_table_names())
    for table in TABLES:
        if table.name not in existing:
            table.create(bind)  # with its indexes
            continue
        have = {c["name"] for c in found.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:  # a column added after the first release: nullable, so old rows read NULL
                op.add_column(table.name, sa.Column(column.name, column.type))
        indexes = {i["name"] for i in found.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table.name)
