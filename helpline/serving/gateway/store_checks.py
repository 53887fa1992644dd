"""Whether the model in production now answers each staff correction right (``helpline eval corrections`` records a
check per corrected turn; the review queue shows the latest), and whether the help centre still backs the correction
(``backed``: while it does, the gateway serves it again as a staff answer). Statements on an open connection of
``GatewayStore``.

A check is *stale* when the correction was saved (again) after it: it judged the model against an older answer.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS correction_checks (
    response_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    fixed INTEGER,
    outcome TEXT NOT NULL DEFAULT '',
    served TEXT NOT NULL DEFAULT '',
    expect TEXT NOT NULL DEFAULT '[]',
    backed INTEGER
);
"""


def upsert_check(
    db: sqlite3.Connection, response_id: str, *, model: str, fixed: bool | None, outcome: str, served: str,
    expect: list[str], backed: bool | None = None, at: float | None = None,
) -> None:  # fmt: skip
    """The latest check of one corrected turn (``fixed`` None: no phrase of the correction can be checked; ``backed``
    None: not asked)."""
    db.execute(
        "INSERT OR REPLACE INTO correction_checks (response_id, at, model, fixed, outcome, served, expect, backed)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (response_id, time.time() if at is None else at, model, _flag(fixed), outcome, served, json.dumps(expect),
         _flag(backed)),
    )  # fmt: skip


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def attach_checks(db: sqlite3.Connection, turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``turns`` each with ``check``: its latest check (``fixed``, ``model``, ``at``, ``outcome``, ``served``,
    ``expect``, ``backed``, ``stale``), or None when its correction was never checked."""
    ids = [t["response_id"] for t in turns]
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
        part = ids[start : start + 500]
        rows = db.execute(
            "SELECT k.*, (SELECT MAX(f.at) FROM feedback f WHERE f.response_id = k.response_id"
            " AND f.correction IS NOT NULL) AS corrected_at"
            f" FROM correction_checks k WHERE k.response_id IN ({', '.join('?' * len(part))})", part,
        ).fetchall()  # fmt: skip
        for r in rows:
            found[r["response_id"]] = {
                "fixed": None if r["fixed"] is None else bool(r["fixed"]),
                "model": r["model"],
                "at": r["at"],
                "outcome": r["outcome"],
                "served": r["served"],
                "expect": json.loads(r["expect"]),
                "backed": None if r["backed"] is None else bool(r["backed"]),
                "stale": r["corrected_at"] is not None and r["corrected_at"] > r["at"],
            }
    return [{**t, "check": found.get(t["response_id"])} for t in turns]
