"""What erasure and retention delete in the gateway's database, statement by statement (``GatewayStore.erase``
and ``GatewayStore.purge_expired`` choose the turns, run these in one transaction and audit the counts)."""

from __future__ import annotations

import sqlite3


def erase_key_extras(db: sqlite3.Connection, *, key_id: int, actor: str, dry_run: bool) -> dict[str, int]:
    """Beyond the key's turns: the feedback it gave on other turns (``feedback_given``), and the error text of its
    failed requests in the audit log (``audit_details``: a refused body's error quotes what was sent). ``actor``
    is how the key's audit entries begin (``Principal.actor``: ``role:id:``)."""
    others = "key_id = ? AND response_id NOT IN (SELECT response_id FROM conversations WHERE key_id = ?)"
    failed = "action = 'request.failed' AND substr(actor, 1, ?) = ?"
    counts = {
        "feedback_given": db.execute(f"SELECT COUNT(*) FROM feedback WHERE {others}", (key_id, key_id)).fetchone()[0],
        "audit_details": db.execute(f"SELECT COUNT(*) FROM audit WHERE {failed}", (len(actor), actor)).fetchone()[0],
    }
    if not dry_run:
        db.execute(f"DELETE FROM feedback WHERE {others}", (key_id, key_id))
        erased = "json_set(detail, '$.error', '(erased)')"
        db.execute(f"UPDATE audit SET detail = {erased} WHERE {failed}", (len(actor), actor))
    return counts


def delete_turns(db: sqlite3.Connection, ids: list[str], *, dry_run: bool) -> dict[str, int]:
    """Count (and unless ``dry_run`` delete) the turns ``ids`` and every feedback row on them."""
    counts = {"turns": 0, "passages": 0, "drafts": 0, "feedback": 0, "comments": 0, "corrections": 0}
    for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
        part = ids[start : start + 500]
        marks = ", ".join("?" * len(part))
        turns = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(json_array_length(passages)), 0), COUNT(withdrawn)"
            f" FROM conversations WHERE response_id IN ({marks})", part,
        ).fetchone()  # fmt: skip
        feedback = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(comment != ''), 0), COUNT(correction)"
            f" FROM feedback WHERE response_id IN ({marks})", part,
        ).fetchone()  # fmt: skip
        for name, value in zip(counts, (*turns, *feedback), strict=True):
            counts[name] += int(value)
        if not dry_run:
            db.execute(f"DELETE FROM feedback WHERE response_id IN ({marks})", part)
            db.execute(f"DELETE FROM correction_checks WHERE response_id IN ({marks})", part)
            db.execute(f"DELETE FROM conversations WHERE response_id IN ({marks})", part)
    return counts
