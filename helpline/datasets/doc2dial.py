"""doc2dial, read in one place: its two files, the dialogues kept for evaluation, a question's turns.

A folder in doc2dial's layout holds ``docs.jsonl`` (``doc_id``, ``title``, ``text``, ``domain``) and
``qa.jsonl`` (``id``, ``dial_id``, ``doc_id``, ``question``, ``history`` of ``{role, utterance}``,
``answer_span``, ``answer_start``, ``agent_response``). Retrieval and generation evaluations, training
sources, the detector's doc2dial pairs and the abstention calibration all read it through here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from helpline.platform.errors import DataError, NotFoundError
from helpline.platform.files import read_jsonl

DOC_FIELDS = ("doc_id", "domain", "text")
QA_FIELDS = ("id", "doc_id", "question", "answer_span", "answer_start")
T = TypeVar("T")


def read_doc2dial(
    folder: str | Path, *, qa_fields: Iterable[str] = QA_FIELDS, doc_fields: Iterable[str] = DOC_FIELDS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(documents, questions) of a folder in doc2dial's layout: ``docs.jsonl`` and ``qa.jsonl``.

    A question whose gold document is not in ``docs.jsonl`` is left out (nothing can be scored on it).
    """
    folder = Path(folder)
    if not (folder / "docs.jsonl").is_file() or not (folder / "qa.jsonl").is_file():
        raise NotFoundError(
            f"{folder} lacks docs.jsonl/qa.jsonl", hint="pass the doc2dial folder, e.g. ../shared/data/doc2dial"
        )
    docs = read_jsonl(folder / "docs.jsonl", required=doc_fields)
    questions = read_jsonl(folder / "qa.jsonl", required=qa_fields)
    known = {d["doc_id"] for d in docs}
    answerable = [q for q in questions if q["doc_id"] in known]
    if questions and not answerable:
        raise DataError(
            f"{folder / 'qa.jsonl'}: no question's doc_id is in docs.jsonl",
            hint="keep each question's gold document in docs.jsonl",
        )
    return docs, answerable


def read_leniently(path: str | Path, parse: Callable[[Any], T], problems: list[str]) -> Iterator[tuple[int, T]]:
    """(line number, ``parse`` of the line's JSON) for each non-blank line of one of the two files, leniently.

    For a training source, which drops a bad line rather than the whole file (``read_doc2dial`` refuses the
    file): a line that is not JSON or that ``parse`` refuses (a missing field: KeyError, a wrong type:
    TypeError, not a number: ValueError) is skipped and added to ``problems`` as ``qa.jsonl line 7: KeyError
    'doc_id'``, in line order with what the caller adds while iterating.
    """
    path = Path(path)
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = parse(json.loads(line))
        except (KeyError, TypeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            problems.append(f"{path.name} line {line_no}: {type(e).__name__} {e}")
            continue
        yield line_no, value


def heldout(dial_id: str) -> bool:
    """Whether a doc2dial dialogue belongs to the evaluation side (one in five, by a hash of its id).

    Training sources (``data prepare --source doc2dial:DIR``) skip these dialogues and the generation
    evaluations (the regression suite's doc2dial cases, ``eval rag``) draw only from them, so a model
    fine-tuned on doc2dial is never scored on a conversation it was trained on.
    """
    return int(hashlib.sha1(dial_id.encode()).hexdigest(), 16) % 5 == 0


def history_turns(row: dict[str, Any], *, last: int | None = None) -> list[tuple[str, str]]:
    """The question's earlier turns as (``user`` | ``assistant``, text), empty ones left out; the
    ``last`` of them when given."""
    turns = row.get("history", [])
    turns = turns[-last:] if last else turns
    return [
        ("user" if t.get("role") == "user" else "assistant", t.get("utterance", ""))
        for t in turns
        if (t.get("utterance") or "").strip()
    ]


def user_history(row: dict[str, Any]) -> list[str]:
    """What the user said before the question, oldest first (what retrieval searches with)."""
    return [text for role, text in history_turns(row) if role == "user"]
