"""The gateway database's tables and indexes (``GatewayStore`` creates and migrates them in place)."""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash TEXT UNIQUE NOT NULL,
    prefix TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS conversations (
    response_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    at REAL NOT NULL,
    key_id INTEGER,
    role TEXT NOT NULL,
    model TEXT NOT NULL,
    served_model TEXT NOT NULL,
    adapter TEXT,
    messages TEXT NOT NULL,
    passages TEXT NOT NULL,
    answer TEXT NOT NULL,
    abstained INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok',
    withdrawn TEXT,
    verification TEXT,
    origins TEXT,
    internal INTEGER
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    response_id TEXT NOT NULL,
    at REAL NOT NULL,
    key_id INTEGER,
    rating TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    correction TEXT
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added after the first release, with their types: an older database gains them when it is
# opened, and its rows read them as NULL. ``origins``: per message of the request, "gateway" when it is an
# answer this gateway gave the same key in the same conversation, else "client" (NULL: not known, so
# every assistant turn counts as the client's). ``internal``: the answer was generated from internal passages.
ADDED_COLUMNS = {
    "conversations": {"withdrawn": "TEXT", "verification": "TEXT", "origins": "TEXT", "internal": "INTEGER"},
    "correction_checks": {"backed": "INTEGER"},
}
# For the queries the routes run: newest turns, a conversation's earlier answers, a turn's latest feedback.
# Created when a database is opened, so one from before them gains them.
INDEXES = """
CREATE INDEX IF NOT EXISTS conversations_at ON conversations (at);
CREATE INDEX IF NOT EXISTS conversations_conversation ON conversations (conversation_id, key_id);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback (response_id, id);
"""
# Each turn with its latest feedback (rating, comment, staff correction).
