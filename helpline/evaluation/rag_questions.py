"""The doc2dial questions of the end-to-end RAG evaluation: dialogues held out of training, some of them
asked with their gold document left out of the index (to measure abstention)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from helpline.datasets.doc2dial import heldout, history_turns, read_doc2dial
from helpline.platform.schemas import ChatMessage, Document


@dataclass
class Question:
    """A doc2dial question with its gold document, gold span and the agent's reply."""

    id: str
    conversation: list[ChatMessage]
    doc_id: str
    gold_passage: str
    agent_response: str
    removed: bool = False


def load_questions(
    folder: Path, *, limit: int, removed: int, seed: int = 0, max_docs: int = 0
) -> tuple[list[Document], list[Question]]:
    """Documents to index and ``limit`` answerable + ``removed`` unanswerable questions (seeded).

    Unanswerable questions have their gold document left out of the returned documents.
    """
    doc_rows, rows = read_doc2dial(folder)
    docs = {d["doc_id"]: d for d in doc_rows}
    # Only dialogues kept out of training data (`data prepare --source doc2dial:` skips them).
    rows = [r for r in rows if heldout(r.get("dial_id", r["id"]))]
    rng = random.Random(seed)
    rng.shuffle(rows)
    gold_removed: set[str] = set()
    picked: list[Question] = []
    for row in rows:
        unanswerable = len(gold_removed) < removed and row["doc_id"] not in {q.doc_id for q in picked}
        if not unanswerable and sum(not q.removed for q in picked) >= limit:
            continue
        if not unanswerable and row["doc_id"] in gold_removed:
            continue
        if unanswerable:
            gold_removed.add(row["doc_id"])
        picked.append(_question(row, docs[row["doc_id"]], removed=unanswerable))
        if len(gold_removed) >= removed and sum(not q.removed for q in picked) >= limit:
            break
    keep = set(docs) - gold_removed
    if max_docs and len(keep) > max_docs:
        # Gold documents of the answerable questions, plus seeded distractors up to max_docs.
        gold = {q.doc_id for q in picked if not q.removed}
        others = sorted(keep - gold)
        rng.shuffle(others)
        keep = gold | set(others[: max(0, max_docs - len(gold))])
    documents = [
        Document(
            doc_id=d["doc_id"],
            title=d.get("title", ""),
            text=d["text"],
            source=str(folder / "docs.jsonl"),
            metadata={"domain": d["domain"]},
        )
        for doc_id, d in docs.items()
        if doc_id in keep
    ]
    return documents, picked


def _question(row: dict, doc: dict, *, removed: bool) -> Question:
    conv = [ChatMessage(role=role, content=text) for role, text in history_turns(row, last=4)]
    conv.append(ChatMessage(role="user", content=row["question"]))
    start = max(0, int(row["answer_start"]) - 200)
    gold = doc["text"][start : int(row["answer_start"]) + len(row["answer_span"]) + 200]
    return Question(row["id"], conv, row["doc_id"], gold, row.get("agent_response") or "", removed)
