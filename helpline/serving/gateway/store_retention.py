"""What erasure and retention delete in the gateway's database, statement by statement (``GatewayStore.erase``
and ``GatewayStore.purge_expired`` choose the turns, run these in one transaction and audit the counts). Written
for SQLite and PostgreSQL alike: what differs between their JSON and boolean functions is counted in Python."""

from __future__ import annotations

import json

from sqlalchemy import Connection, and_, delete, func, select, update

from helpline.serving.gateway.store_schema import audit, conversations, correction_checks, feedback


def erase_key_extras(db: Connection, *, key_id: int, actor: str, dry_run: bool) -> dict[str, int]:
    """Beyond the key's turns: the feedback it gave on other turns (``feedback_given``), and the error text of its
    failed requests in the audit log (``audit_details``: a refused body's error quotes what was sent). ``actor``
    is how the key's audit entries begin (``Principal.actor``: ``role:id:``)."""
    own_turns = select(conversations.c.response_id).where(conversations.c.key_id == key_id)
    others = and_(feedback.c.key_id == key_id, feedback.c.response_id.not_in(own_turns))
    failed = and_(audit.c.action == "request.failed", audit.c.actor.startswith(actor, autoescape=True))
    entries = db.execute(select(audit.c.id, audit.c.detail).where(failed)).all()
    counts = {
        "feedback_given": db.execute(select(func.count()).select_from(feedback).where(others)).scalar_one(),
        "audit_details": len(entries),
    }
    if not dry_run:
        db.execute(delete(feedback).where(others))
        for entry_id, detail in entries:
            erased = {**json.loads(detail), "error": "(erased)"}
            db.execute(update(audit).where(audit.c.id == entry_id).values(detail=json.dumps(erased)))
    return counts


def delete_turns(db: Connection, ids: list[str], *, dry_run: bool) -> dict[str, int]:
    """Count (and unless ``dry_run`` delete) the turns ``ids`` and every feedback row on them."""
    counts = {"turns": 0, "passages": 0, "drafts": 0, "feedback": 0, "comments": 0, "corrections": 0}
    c, f = conversations.c, feedback.c
    for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
        part = ids[start : start + 500]
        for passages, withdrawn in db.execute(select(c.passages, c.withdrawn).where(c.response_id.in_(part))):
            counts["turns"] += 1
            counts["passages"] += len(json.loads(passages))
            counts["drafts"] += withdrawn is not None
        for comment, correction in db.execute(select(f.comment, f.correction).where(f.response_id.in_(part))):
            counts["feedback"] += 1
            counts["comments"] += comment != ""
            counts["corrections"] += correction is not None
        if not dry_run:
            db.execute(delete(feedback).where(f.response_id.in_(part)))
            db.execute(delete(correction_checks).where(correction_checks.c.response_id.in_(part)))
            db.execute(delete(conversations).where(c.response_id.in_(part)))
    return counts
