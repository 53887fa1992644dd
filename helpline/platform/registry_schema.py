"""The registry's tables, as SQLAlchemy Core tables (``Registry`` queries through them).

The revisions in ``registry_alembic/versions`` create and change these tables; a test holds the two in agreement.
Times are REAL seconds since the epoch and metadata a JSON text, as the SQLite files of earlier releases hold them,
so those files are adopted as they are.
"""

from __future__ import annotations

from sqlalchemy import Column, Double, ForeignKey, Integer, MetaData, Table, Text, text

metadata = MetaData()

models = Table(
    "models", metadata,
    Column("name", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("base_model", Text),
    Column("created_at", Double, nullable=False),
    Column("metadata", Text, nullable=False, server_default=text("'{}'")),
)  # fmt: skip
aliases = Table(
    "aliases", metadata,
    Column("alias", Text, primary_key=True),
    Column("model_name", Text, ForeignKey("models.name"), nullable=False),
    Column("updated_at", Double, nullable=False),
)  # fmt: skip
# ``action``: "set" (a promotion) or "rollback", so that the next rollback walks further back instead of undoing one.
alias_history = Table(
    "alias_history", metadata,
    Column("id", Integer, primary_key=True),
    Column("alias", Text, nullable=False),
    Column("model_name", Text),
    Column("previous", Text),
    Column("at", Double, nullable=False),
    Column("actor", Text, nullable=False, server_default=text("''")),
    Column("action", Text, nullable=False, server_default=text("'set'")),
    sqlite_autoincrement=True,
)  # fmt: skip
kb_versions = Table(
    "kb_versions", metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", Double, nullable=False),
    Column("added", Integer, nullable=False),
    Column("updated", Integer, nullable=False),
    Column("deleted", Integer, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("note", Text, nullable=False, server_default=text("''")),
    sqlite_autoincrement=True,
)  # fmt: skip
