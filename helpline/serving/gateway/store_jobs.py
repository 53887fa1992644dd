"""Console jobs (`helpline data|train|eval|bench ...` run for engineers): statements on an open connection of
``GatewayStore``, which every gateway replica and `helpline worker` share; the table is ``store_schema.jobs``.

A job goes ``queued`` → ``running`` (claimed by one runner: the update that moves it out of ``queued`` succeeds for
one runner only) → ``succeeded``, ``failed`` or ``cancelled``. Every change of state is conditional on the state it
leaves, so two runners or replicas that see the same end record it once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, insert, select, update

from helpline.platform import database
from helpline.serving.gateway.store_schema import jobs

ACTIVE = ("queued", "running")
#: The advisory lock (PostgreSQL) taken while a job is queued, so that two replicas never queue two at once.
_QUEUE_LOCK = 0x6A6F6273  # "jobs"


def queue(db: Connection, row: dict[str, Any]) -> str | None:
    """Queue the job ``row`` unless one is queued or running; returns that one's id (and queues nothing) if so.
    ``db`` must not be in a transaction yet: this takes the database's write lock for the check and the insert."""
    database.lock(db, _QUEUE_LOCK)
    active = db.execute(select(jobs.c.id).where(jobs.c.state.in_(ACTIVE)).limit(1)).scalar()
    if active is None:
        db.execute(insert(jobs), {**row, "args": json.dumps(row["args"]), "state": "queued"})
    return active


def get(db: Connection, job_id: str) -> dict[str, Any] | None:
    row = db.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
    return _job(row) if row else None


def listed(db: Connection, *, limit: int = 50, state: str | None = None, host: str | None = None) -> list[dict]:
    """The newest jobs first (with ``state`` or ``host``: only those)."""
    query = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    if state is not None:
        query = query.where(jobs.c.state == state)
    if host is not None:
        query = query.where(jobs.c.host == host)
    return [_job(r) for r in db.execute(query).mappings()]


def oldest_queued(db: Connection) -> str | None:
    query = select(jobs.c.id).where(jobs.c.state == "queued").order_by(jobs.c.created_at, jobs.c.id).limit(1)
    return db.execute(query).scalar()


def claim(db: Connection, job_id: str, *, host: str) -> bool:
    """Move a queued job to ``running`` on ``host``; True for the one runner whose update took it."""
    where = (jobs.c.id == job_id) & (jobs.c.state == "queued")
    claimed = update(jobs).where(where).values(state="running", host=host, started_at=time.time())
    return db.execute(claimed).rowcount == 1


def started(db: Connection, job_id: str, *, pid: int, pid_start: str | None, log_path: str) -> None:
    db.execute(update(jobs).where(jobs.c.id == job_id).values(pid=pid, pid_start=pid_start, log_path=log_path))


def tail(db: Connection, job_id: str, text: str) -> None:
    db.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.state == "running").values(log_tail=text))


def request_cancel(db: Connection, job_id: str) -> str | None:
    """Ask for a job to stop: a queued one is cancelled at once, a running one flagged for its runner. Returns the
    state it was in (None: no such job)."""
    state = db.execute(select(jobs.c.state).where(jobs.c.id == job_id)).scalar()
    if state == "queued":
        if not end(db, job_id, state="cancelled", exit_code=None, leaving="queued", reason="cancelled before it ran"):
            return request_cancel(db, job_id)  # a runner claimed it meanwhile
    elif state == "running":
        db.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=1))
    return state


def end(
    db: Connection, job_id: str, *, state: str, exit_code: int | None, log_tail: str | None = None,
    reason: str = "", leaving: str = "running",
) -> bool:  # fmt: skip
    """Record a job's end; False when it was no longer ``leaving`` (another runner or replica recorded it)."""
    values: dict[str, Any] = {"state": state, "exit_code": exit_code, "ended_at": time.time(), "reason": reason}
    if log_tail is not None:
        values["log_tail"] = log_tail
    where = (jobs.c.id == job_id) & (jobs.c.state == leaving)
    return db.execute(update(jobs).where(where).values(**values)).rowcount == 1


def _job(row: Any) -> dict[str, Any]:
    return {**row, "args": json.loads(row["args"]), "cancel_requested": bool(row["cancel_requested"])}
