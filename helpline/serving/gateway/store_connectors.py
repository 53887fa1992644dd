"""Knowledge-base connectors (a help-centre export or a website, synced on a schedule): statements on an open
connection of ``GatewayStore``, which every gateway replica shares; the table is ``store_schema.connectors``."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, delete, select, update

from helpline.serving.gateway.store_db import upsert
from helpline.serving.gateway.store_schema import connectors


def save(db: Connection, name: str, *, source: str, every_s: float, actor: str) -> None:
    """Add a connector, or change one's source and schedule (its last run is kept)."""
    row = {"name": name, "source": source, "every_s": every_s, "actor": actor, "added_at": time.time()}
    upsert(db, connectors, row, keep=("added_at",))


def listed(db: Connection) -> list[dict[str, Any]]:
    rows = db.execute(select(connectors).order_by(connectors.c.name)).mappings()
    return [{**r, "last_summary": json.loads(r["last_summary"])} for r in rows]


def remove(db: Connection, name: str) -> bool:
    return db.execute(delete(connectors).where(connectors.c.name == name)).rowcount > 0


def ran(db: Connection, name: str, *, status: str, summary: dict[str, Any], at: float | None = None) -> None:
    last = {"last_at": time.time() if at is None else at, "last_status": status, "last_summary": json.dumps(summary)}
    db.execute(update(connectors).where(connectors.c.name == name).values(**last))
