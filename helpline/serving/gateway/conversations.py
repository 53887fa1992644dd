"""Turn logged conversations into training data for fine-tuning (`{"messages": [...]}` JSONL)."""

from __future__ import annotations

import json
from pathlib import Path

from helpline.platform.pii import scrub_messages
from helpline.serving.gateway.store import GatewayStore


def training_rows(store: GatewayStore, *, include_unrated: bool = False, scrub: bool = True) -> list[dict]:
    """One chat per good turn: rated up, or corrected by staff (the correction replaces the answer).

    Abstentions, failed and rated-down-without-correction turns are left out; system prompts are
    not exported (training adds its own). ``scrub`` replaces personal data by the placeholders of
    :mod:`helpline.platform.pii`, the ones `helpline data prepare` writes.
    """
    rows = []
    for turn in reversed(store.turns(limit=1_000_000)):
        answer = turn.get("correction") or (turn["answer"] if turn.get("rating") == "up" else None)
        if answer is None and include_unrated and turn.get("rating") is None and not turn["abstained"]:
            answer = turn["answer"]
        if not answer or turn["status"] != "ok":
            continue
        messages = [m for m in turn["messages"] if m["role"] != "system"]
        messages.append({"role": "assistant", "content": answer})
        if scrub:
            messages, _ = scrub_messages(messages)
        rows.append({"messages": messages, "metadata": {"response_id": turn["response_id"], "model": turn["model"]}})
    return rows


def export_lines(store: GatewayStore, **kwargs: bool) -> list[str]:
    return [json.dumps(row, ensure_ascii=False) + "\n" for row in training_rows(store, **kwargs)]


def export_jsonl(store: GatewayStore, path: Path, **kwargs: bool) -> int:
    """Write the training JSONL to ``path``; returns the number of conversations."""
    lines = export_lines(store, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return len(lines)
