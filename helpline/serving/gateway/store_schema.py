"""The gateway database's tables and indexes, as SQLAlchemy Core tables (``GatewayStore`` queries through them).

The migrations in ``migrations/versions`` create and change these tables; a test holds the two in agreement
(``tests/serving/test_store_migrations.py``). Flags are INTEGER 0/1 (``Flag``) and times REAL seconds since the
epoch, as the SQLite files of earlier releases hold them, so those files are adopted as they are.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Double, Index, Integer, MetaData, Table, Text, TypeDecorator, text

metadata = MetaData()


class Flag(TypeDecorator):
    """A yes/no stored as INTEGER 0/1 (or NULL: not known); a Python bool is written as 0/1 on every database."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> int | None:
        return None if value is None else int(value)


def _empty(default: str = "") -> Any:
    return text(f"'{default}'")


api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True),
    Column("key_hash", Text, unique=True, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("name", Text, nullable=False, server_default=_empty()),
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double),
    sqlite_autoincrement=True,
)  # fmt: skip
audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Double, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False, server_default=_empty()),
    Column("detail", Text, nullable=False, server_default=_empty("{}")),
    sqlite_autoincrement=True,
)  # fmt: skip
# ``origins``: per message of the request, "gateway" when it is an answer this gateway gave the same key in the same
# conversation, else "client" (NULL: not known, so every assistant turn counts as the client's). ``internal``: the
# answer was generated from internal passages. ``withdrawn``, ``verification``: the draft the hallucination check
# withdrew and its verdict. These four came after the first release (a file from before gains them, as NULL).
conversations = Table(
    "conversations", metadata,
    Column("response_id", Text, primary_key=True),
    Column("conversation_id", Text, nullable=False),
    Column("at", Double, nullable=False),
    Column("key_id", Integer),
    Column("role", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("served_model", Text, nullable=False),
    Column("adapter", Text),
    Column("messages", Text, nullable=False),
    Column("passages", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("abstained", Flag, nullable=False),
    Column("latency_ms", Double, nullable=False),
    Column("status", Text, nullable=False, server_default=_empty("ok")),
    Column("withdrawn", Text),
    Column("verification", Text),
    Column("origins", Text),
    Column("internal", Flag),
    # for the routes' queries: newest turns, a conversation's earlier answers
    Index("conversations_at", "at"),
    Index("conversations_conversation", "conversation_id", "key_id"),
)  # fmt: skip
feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True),
    Column("response_id", Text, nullable=False),
    Column("at", Double, nullable=False),
    Column("key_id", Integer),
    Column("rating", Text, nullable=False),
    Column("comment", Text, nullable=False, server_default=_empty()),
    Column("correction", Text),
    Index("feedback_response", "response_id", "id"),  # a turn's latest feedback
    sqlite_autoincrement=True,
)  # fmt: skip
settings = Table(
    "settings", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)  # fmt: skip
# The latest check of each staff correction (``store_checks``); ``backed`` came after the first release.
correction_checks = Table(
    "correction_checks", metadata,
    Column("response_id", Text, primary_key=True),
    Column("at", Double, nullable=False),
    Column("model", Text, nullable=False),
    Column("fixed", Flag),
    Column("outcome", Text, nullable=False, server_default=_empty()),
    Column("served", Text, nullable=False, server_default=_empty()),
    Column("expect", Text, nullable=False, server_default=_empty("[]")),
    Column("backed", Flag),
)  # fmt: skip
# Knowledge-base connectors (``store_connectors``).
connectors = Table(
    "connectors", metadata,
    Column("name", Text, primary_key=True),
    Column("source", Text, nullable=False),
    Column("every_s", Double, nullable=False),
    Column("actor", Text, nullable=False, server_default=_empty()),
    Column("added_at", Double, nullable=False),
    Column("last_at", Double),
    Column("last_status", Text, nullable=False, server_default=_empty()),
    Column("last_summary", Text, nullable=False, server_default=_empty("{}")),
)  # fmt: skip
# Console jobs (``store_jobs``): one row per `helpline ...` job, queued by a gateway, run by a runner (``job_runner``).
jobs = Table(
    "jobs", metadata,
    Column("id", Text, primary_key=True),
    Column("command", Text, nullable=False),
    Column("args", Text, nullable=False, server_default=_empty("[]")),
    Column("actor", Text, nullable=False, server_default=_empty()),
    Column("state", Text, nullable=False),  # queued, running, succeeded, failed, cancelled
    Column("created_at", Double, nullable=False),
    Column("started_at", Double),
    Column("ended_at", Double),
    Column("exit_code", Integer),
    Column("host", Text),
    Column("pid", Integer),
    Column("pid_start", Text),
    Column("cancel_requested", Flag, nullable=False, server_default=text("0")),
    Column("log_tail", Text, nullable=False, server_default=_empty()),
    Column("log_path", Text),
    Column("reason", Text, nullable=False, server_default=_empty()),
    Index("jobs_state", "state", "created_at"),
)  # fmt: skip
