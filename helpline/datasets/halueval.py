"""HaluEval and doc2dial readers, the item-level split, and the official evaluation protocol.

Items are split *before* they are turned into (knowledge, answer) pairs, so no item's right or
hallucinated answer ever appears both in training and in the held-out split.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from helpline.datasets.doc2dial import history_turns, read_doc2dial
from helpline.platform.errors import DataError, NotFoundError
from helpline.platform.files import read_jsonl

Kind = Literal["qa", "dialogue", "doc2dial"]
Split = Literal["all", "train", "val", "test"]

# Fractions of each file's items; "test" is what training never sees.
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
SPLIT_SEED = 13
PROTOCOL_SEED = 0
# HaluEval's field names for each file kind: (context field, right answer, hallucinated answer).
_FIELDS: dict[str, tuple[str, str, str]] = {
    "qa": ("question", "right_answer", "hallucinated_answer"),
    "dialogue": ("dialogue_history", "right_response", "hallucinated_response"),
}


@dataclass(frozen=True)
class Item:
    """One HaluEval item: knowledge, what was asked, and the two candidate answers."""

    key: str
    knowledge: str
    question: str
    right: str
    hallucinated: str


@dataclass(frozen=True)
class Pair:
    """One (passages, answer) pair with its label: 1 means hallucinated."""

    passages: tuple[str, ...]
    answer: str
    question: str
    label: int
    key: str = ""


def parse_dataset_spec(spec: str) -> tuple[Kind, Path]:
    """``halueval-qa:FILE`` / ``halueval-dialogue:FILE`` / ``doc2dial:FOLDER`` -> (kind, path)."""
    name, sep, path = spec.partition(":")
    kinds = {"halueval-qa": "qa", "halueval-dialogue": "dialogue", "doc2dial": "doc2dial", "doc2dial-agent": "doc2dial"}
    if not sep or name not in kinds:
        raise DataError(
            f"cannot read dataset spec {spec!r}",
            hint="use halueval-qa:FILE, halueval-dialogue:FILE, doc2dial:FOLDER or doc2dial-agent:FOLDER",
        )
    if not Path(path).exists():
        raise NotFoundError(f"dataset file {path!r} does not exist", hint="pass the path of a HaluEval-format file")
    return kinds[name], Path(path)  # type: ignore[return-value]


def read_halueval(path: str | Path, kind: Literal["qa", "dialogue"]) -> list[Item]:
    """Read a HaluEval file; each malformed line is reported with its line number."""
    context_field, right_field, hall_field = _FIELDS[kind]
    rows = read_jsonl(
        path,
        required=("knowledge", context_field, right_field, hall_field),
        hint=f"each line of a HaluEval {kind} file needs knowledge, {context_field}, {right_field} and {hall_field}",
    )
    items = [
        Item(
            key=_key(str(row["knowledge"]), str(row[context_field])),
            knowledge=str(row["knowledge"]),
            question=str(row[context_field]),
            right=str(row[right_field]),
            hallucinated=str(row[hall_field]),
        )
        for row in rows
    ]
    if not items:
        raise DataError(f"{path} has no rows", hint="pass a non-empty JSONL file in HaluEval's format")
    return items


def split_items(items: list[Item], split: Split, *, seed: int = SPLIT_SEED) -> list[Item]:
    """A deterministic item-level split, keyed on each item's content (not its position)."""
    if split == "all":
        return list(items)
    lo = {"train": 0.0, "val": SPLIT_FRACTIONS["train"], "test": 1.0 - SPLIT_FRACTIONS["test"]}[split]
    hi = lo + SPLIT_FRACTIONS[split]
    return [it for it in items if lo <= _unit(f"{seed}:{it.key}") < hi]


def protocol_pairs(items: list[Item], *, seed: int = PROTOCOL_SEED) -> list[Pair]:
    """HaluEval's protocol: each item shows its right or its hallucinated answer with p = 0.5."""
    rng = random.Random(seed)
    pairs = []
    for it in items:
        label = int(rng.random() < 0.5)
        answer = it.hallucinated if label else it.right
        pairs.append(Pair((it.knowledge,), answer, it.question, label, it.key))
    return pairs


def both_pairs(items: list[Item]) -> list[Pair]:
    """Both answers of every item (for training: balanced and contrastive)."""
    out = []
    for it in items:
        out.append(Pair((it.knowledge,), it.right, it.question, 0, it.key))
        out.append(Pair((it.knowledge,), it.hallucinated, it.question, 1, it.key))
    return out


def doc2dial_pairs(
    folder: str | Path, split: Split, *, seed: int = PROTOCOL_SEED, window: int = 700, faithful: str = "span"
) -> list[Pair]:
    """Faithful vs unfaithful answers over doc2dial passages, split by document.

    The passage is the gold document's text around the gold span (what retrieval returns). The
    faithful answer is the gold span; the unfaithful one is a fluent span of another document of
    the same domain. Each question gets one of the two with p = 0.5 (as in HaluEval's protocol).
    With ``faithful="agent"`` the answers are human agent replies instead (paraphrases of the gold
    passage, against the reply of a question about another document of the same domain): closer to
    what a generator writes than verbatim spans.
    """
    doc_rows, rows = read_doc2dial(folder)
    docs = {d["doc_id"]: d for d in doc_rows}
    by_domain: dict[str, list[str]] = {}
    for doc_id, d in docs.items():
        by_domain.setdefault(d["domain"], []).append(doc_id)
    rng = random.Random(seed)
    pairs = []
    replies: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        if r.get("agent_response") and r["doc_id"] in docs:
            replies.setdefault(docs[r["doc_id"]]["domain"], []).append((r["doc_id"], r["agent_response"]))
    for row in rows:
        doc = docs.get(row["doc_id"])
        if doc is None or (split != "all" and _doc_split(row["doc_id"]) != split):
            continue
        if faithful == "agent" and not row.get("agent_response"):
            continue
        start = max(0, int(row["answer_start"]) - window // 2)
        passage = doc["text"][start : start + window + len(row["answer_span"])]
        label = int(rng.random() < 0.5)
        answer = row["answer_span"].strip() if faithful == "span" else row["agent_response"].strip()
        if label and faithful == "span":
            others = [o for o in by_domain[doc["domain"]] if o != row["doc_id"]]
            answer = _fluent_span(docs[rng.choice(others)]["text"], rng, len(answer))
        elif label:
            answer = rng.choice([t for d, t in replies[doc["domain"]] if d != row["doc_id"]]).strip()
        question = _dialogue_question(row)
        pairs.append(Pair((passage,), answer, question, label, row["id"]))
    return pairs


def _dialogue_question(row: dict) -> str:
    turns = [f"[{'Human' if role == 'user' else 'Assistant'}]: {text}" for role, text in history_turns(row)]
    return " ".join([*turns[-2:], f"[Human]: {row['question']}"])


def _fluent_span(text: str, rng: random.Random, target_chars: int) -> str:
    """Whole sentences of ``text`` of about ``target_chars`` characters."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 5]
    if not sentences:
        return text[:target_chars]
    i = rng.randrange(len(sentences))
    out = sentences[i]
    while len(out) < target_chars and i + 1 < len(sentences):
        i += 1
        out += " " + sentences[i]
    return out.strip()


def _doc_split(doc_id: str) -> str:
    u = _unit(f"{SPLIT_SEED}:doc:{doc_id}")
    return "train" if u < SPLIT_FRACTIONS["train"] else "val" if u < 1 - SPLIT_FRACTIONS["test"] else "test"


def _key(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


def _unit(text: str) -> float:
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / 16**12
