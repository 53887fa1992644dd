"""Knowledge-base connectors (a help-centre export or a website, synced on a schedule): statements on an open
connection of ``GatewayStore``, which every gateway replica shares."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS connectors (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    every_s REAL NOT NULL,
    actor TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL,
    last_at REAL,
    last_status TEXT NOT NULL DEFAULT '',
    last_summary TEXT NOT NULL DEFAULT '{}'
);
"""


def save(db: sqlite3.Connection, name: str, *, source: str, every_s: float, actor: str) -> None:
    """Add a connector, or change one's source and schedule (its last run is kept)."""
    db.execute(
        "INSERT INTO connectors (name, source, every_s, actor, added_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT(name) DO UPDATE SET source = excluded.source, every_s = excluded.every_s, actor = excluded.actor",
        (name, source, every_s, actor, time.time()),
    )


def listed(db: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = db.execute("SELECT * FROM connectors ORDER BY name").fetchall()
    return [{**dict(r), "last_summary": json.loads(r["last_summary"])} for r in rows]


def remove(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("DELETE FROM connectors WHERE name = ?", (name,)).rowcount > 0


def ran(db: sqlite3.Connection, name: str, *, status: str, summary: dict[str, Any], at: float | None = None) -> None:
    db.execute(
        "UPDATE connectors SET last_at = ?, last_status = ?, last_summary = ? WHERE name = ?",
        (time.time() if at is None else at, status, json.dumps(summary), name),
    )
