"""Turn logged conversations into training data for fine-tuning (`{"messages": [...]}` JSONL).

What a logged turn may teach a model:

- Assistant turns are only what this gateway answered, or what staff wrote as the right answer. A client
  sends its own history, assistant turns included, so an assistant turn the gateway did not give that key
  in that conversation (``origins``) is the client's writing: it is never a training target, and the
  history before it is dropped with it (the exported chat starts at the next user turn).
- A staff member's answer generated from internal passages may repeat them; it is staff-facing data,
  exported only when asked for (``staff_facing``), never in the default customer-facing export.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from helpline.answering.staff_answers import Changes, StaffAnswer, match_text
from helpline.platform.pii import scrub_messages
from helpline.platform.schemas import Chunk, ScoredChunk
from helpline.serving.gateway.store import GatewayStore

Audience = Literal["customer", "staff"]
#: The most staff corrections a gateway reads (and serves again), newest first.
FULL_READ = 100_000


def audience(turn: dict[str, Any]) -> Audience:
    """``staff`` for a turn served to staff from internal passages (a row from before this was recorded
    counts as staff-facing when staff asked), else ``customer``."""
    internal = turn.get("internal")
    if internal is None:
        return "customer" if turn["role"] == "customer" else "staff"
    return "staff" if internal else "customer"


def logged_passages(turn: dict[str, Any]) -> list[ScoredChunk]:
    """The turn's passages as the gateway put them in its prompt, from their logged citations (text included)."""
    return [
        ScoredChunk(
            chunk=Chunk(chunk_id=p["chunk_id"], doc_id=p["doc_id"], title=p["title"], text=p.get("text") or ""),
            score=p["score"],
        )
        for p in turn["passages"]
    ]


def trusted_history(turn: dict[str, Any]) -> list[dict[str, str]]:
    """The turn's conversation without system messages, from just after the last assistant turn the
    gateway did not write (none of the client's assistant turns survive)."""
    origins = turn.get("origins") or ["client"] * len(turn["messages"])
    start = 0
    for i, (m, origin) in enumerate(zip(turn["messages"], origins, strict=False)):
        if m["role"] == "assistant" and origin != "gateway":
            start = i + 1
    return [{"role": m["role"], "content": m["content"]} for m in turn["messages"][start:] if m["role"] != "system"]


def training_rows(
    store: GatewayStore,
    *,
    include_unrated: bool = False,
    scrub: bool = True,
    staff_facing: bool = False,
    page: int = 500,
) -> list[dict]:
    """One chat per good turn: rated up, or corrected by staff (the correction replaces the answer).

    Abstentions, failed and rated-down-without-correction turns are left out; system prompts are
    not exported (training adds its own). ``scrub`` replaces personal data by the placeholders of
    :mod:`helpline.platform.pii`, the ones `helpline data prepare` writes. ``staff_facing`` adds the
    staff answers drawn from internal passages (for a model that answers staff). The log is read
    ``page`` turns at a time.
    """
    rows = []
    for turn in store.training_turns(include_unrated=include_unrated, page=page):
        who = audience(turn)
        if who == "staff" and not staff_facing:
            continue
        rated_up = turn.get("rating") == "up" and not turn["abstained"]  # a liked handoff teaches nothing
        answer = turn.get("correction") or (turn["answer"] if rated_up else None)
        if answer is None and include_unrated and turn.get("rating") is None and not turn["abstained"]:
            answer = turn["answer"]
        if not answer:
            continue
        messages = [*trusted_history(turn), {"role": "assistant", "content": answer}]
        if scrub:
            messages, _ = scrub_messages(messages)
        metadata = {"response_id": turn["response_id"], "model": turn["model"], "audience": who}
        rows.append({"messages": messages, "metadata": metadata})
    return rows


def export_lines(store: GatewayStore, **kwargs: bool) -> list[str]:
    return [json.dumps(row, ensure_ascii=False) + "\n" for row in training_rows(store, **kwargs)]


def export_jsonl(store: GatewayStore, path: Path, **kwargs: bool) -> int:
    """Write the training JSONL to ``path``; returns the number of conversations."""
    lines = export_lines(store, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def staff_answer(turn: dict[str, Any]) -> StaffAnswer | None:
    """The correction the turn's latest feedback holds, with the question it answers (None: it holds none)."""
    correction = (turn.get("correction") or "").strip()
    asked = [m["content"] for m in trusted_history(turn) if m["role"] == "user"]
    if not correction or not asked or turn["status"] != "ok":
        return None
    question = match_text(asked[-1], asked[:-1])
    return StaffAnswer(turn["response_id"], question, correction, staff_only=audience(turn) == "staff")


def staff_answer_changes(store: GatewayStore, since: float | None) -> tuple[Changes, float | None]:
    """The staff answers of the turns whose latest feedback was given after ``since``, and the time of the latest
    feedback read; None reads every corrected turn (up to ``FULL_READ``, newest first), with a cursor a little before
    the read began (what is read twice is replaced, not doubled). The source a gateway's :class:`StaffAnswers` reads."""
    if since is None:
        began = time.time() - 5.0
        return [(t["response_id"], staff_answer(t)) for t in store.review_items("reviewed", limit=FULL_READ)], began
    changes, cursor = [], since
    for turn in store.feedback_turns(since=since):
        changes.append((turn["response_id"], staff_answer(turn)))
        cursor = turn["feedback_at"] if cursor is None else max(cursor, turn["feedback_at"])
    return changes, cursor
