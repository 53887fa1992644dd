"""Whether the model in production now answers each staff correction right (``helpline eval corrections`` records a
check per corrected turn; the review queue shows the latest), and whether the help centre still backs the correction
(``backed``: while it does, the gateway serves it again as a staff answer). Statements on an open connection of
``GatewayStore``; the table is ``store_schema.correction_checks``.

A check is *stale* when the correction was saved (again) after it: it judged the model against an older answer.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, func, select

from helpline.serving.gateway.store_db import upsert
from helpline.serving.gateway.store_schema import correction_checks, feedback


def upsert_check(
    db: Connection, response_id: str, *, model: str, fixed: bool | None, outcome: str, served: str,
    expect: list[str], backed: bool | None = None, at: float | None = None,
) -> None:  # fmt: skip
    """The latest check of one corrected turn (``fixed`` None: no phrase of the correction can be checked; ``backed``
    None: not asked)."""
    upsert(db, correction_checks, {
        "response_id": response_id, "at": time.time() if at is None else at, "model": model, "fixed": fixed,
        "outcome": outcome, "served": served, "expect": json.dumps(expect), "backed": backed,
    })  # fmt: skip


def attach_checks(db: Connection, turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``turns`` each with ``check``: its latest check (``fixed``, ``model``, ``at``, ``outcome``, ``served``,
    ``expect``, ``backed``, ``stale``), or None when its correction was never checked."""
    k, f = correction_checks.c, feedback.c
    corrected_at = (
        select(func.max(f.at)).where(f.response_id == k.response_id, f.correction.is_not(None)).scalar_subquery()
    )
    ids = [t["response_id"] for t in turns]
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
        query = select(correction_checks, corrected_at.label("corrected_at")).where(
            k.response_id.in_(ids[start : start + 500])
        )
        for r in db.execute(query).mappings():
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
