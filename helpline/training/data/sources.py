"""Read conversations from the three supported layouts, refusing malformed input with its location.

``bitext:FILE.csv``     the Bitext layout: ``instruction``, ``response``, ``intent`` (+ ``category``, ...)
``chat:FILE.jsonl``     one ``{"messages": [{"role": ..., "content": ...}, ...], "intent"?: ...}`` per line
``reviewed:FILE.jsonl`` conversations reviewed in the platform: ``{"messages": [...], "corrected_answer":
                        "...", "intent"?: ...}``; a trailing assistant turn (the bot's wrong answer) is
                        replaced by the reviewer's corrected answer
``doc2dial:DIR``        grounded dialogues (``docs.jsonl`` + ``qa.jsonl``): each question with its earlier
                        turns, rendered with serving's support prompt over two passages in seeded order
                        (the gold document around the answer, and a hard distractor: one of the three
                        chunks of other documents that BM25 ranks best for the user's turns, as
                        serving's retrieval would put beside it), and the human agent's reply as the
                        answer. Dialogues kept for evaluation (``datasets.doc2dial.heldout``) and turns without an
                        agent reply are skipped.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from helpline.platform.errors import DataError, NotFoundError

if TYPE_CHECKING:
    import random

    from helpline.platform.schemas import Chunk
    from helpline.retrieval.bm25 import BM25Index

ROLES = ("system", "user", "assistant")
BITEXT_REQUIRED = ("instruction", "response", "intent")
SOURCE_KINDS = ("bitext", "chat", "reviewed", "doc2dial")
_MAX_LISTED = 8  # problems listed in one error; the rest are counted


@dataclass
class Conversation:
    """One training example: chat messages plus the labels the split and the manifest need."""

    messages: list[dict[str, str]]
    intent: str = "unknown"
    category: str = ""
    origin: str = ""  # "file:row", never the content
    flags: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"messages": self.messages, "intent": self.intent, "category": self.category, "origin": self.origin}


def parse_source(spec: str) -> tuple[str, Path]:
    """Split ``kind:PATH`` and check the kind and that the file exists."""
    kind, sep, path = spec.partition(":")
    if not sep or kind not in SOURCE_KINDS:
        raise DataError(
            f"source {spec!r} has no known kind",
            hint=f"write it as KIND:PATH with KIND one of {', '.join(SOURCE_KINDS)}, e.g. bitext:support.csv",
        )
    file = Path(path).expanduser()
    if kind == "doc2dial":
        missing = [n for n in ("docs.jsonl", "qa.jsonl") if not (file / n).is_file()]
        if missing:
            raise NotFoundError(
                f"doc2dial source {file} lacks {', '.join(missing)}",
                hint="pass the doc2dial folder (docs.jsonl and qa.jsonl), e.g. doc2dial:../shared/data/doc2dial",
            )
        return kind, file
    if not file.is_file():
        raise NotFoundError(f"source file {file} does not exist", hint="check the path after the kind prefix")
    return kind, file


def load_source(spec: str, *, skip_invalid: bool = False) -> tuple[list[Conversation], list[str]]:
    """Load one source. Returns the conversations and the problems of rows that were skipped.

    Without ``skip_invalid`` any malformed row refuses the whole file with a DataError that names
    the file, the row and the column or field.
    """
    kind, file = parse_source(spec)
    loader = {"bitext": _load_bitext, "doc2dial": _load_doc2dial}.get(kind, _load_jsonl)
    try:
        conversations, problems = loader(file, kind)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{file}: not UTF-8 text ({e.reason} at byte {e.start} of a line)",
            hint="save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`",
        ) from e
    if problems and not skip_invalid:
        listed = "; ".join(problems[:_MAX_LISTED])
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise DataError(
            f"{file}: {len(problems)} malformed row(s): {listed}{more}",
            hint="fix those rows, or pass --skip-invalid to drop them (they are counted in the manifest)",
        )
    return conversations, problems


def _load_bitext(file: Path, kind: str) -> tuple[list[Conversation], list[str]]:
    with file.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing = [c for c in BITEXT_REQUIRED if c not in columns]
        if missing:
            raise DataError(
                f"{file}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})",
                hint=f"a bitext CSV needs the columns {', '.join(BITEXT_REQUIRED)}; use chat:FILE.jsonl for chat data",
            )
        conversations, problems = [], []
        for line, row in enumerate(reader, start=2):  # line 1 is the header
            empty = [c for c in BITEXT_REQUIRED if not (row.get(c) or "").strip()]
            if empty:
                problems.append(f"row {line}: empty column(s) {', '.join(empty)}")
                continue
            messages = [
                {"role": "user", "content": row["instruction"].strip()},
                {"role": "assistant", "content": row["response"].strip()},
            ]
            conversations.append(
                Conversation(
                    messages, row["intent"].strip(), (row.get("category") or "").strip(), f"{file.name}:{line}"
                )
            )
    return conversations, problems


def _load_jsonl(file: Path, kind: str) -> tuple[list[Conversation], list[str]]:
    conversations, problems = [], []
    with file.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"line {line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not valid JSON ({e.msg})")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
                problems.append(f"{where}: field 'messages' (a list of {{role, content}}) is missing")
                continue
            messages = record["messages"]
            if kind == "reviewed":
                answer = record.get("corrected_answer")
                if not isinstance(answer, str) or not answer.strip():
                    problems.append(f"{where}: field 'corrected_answer' is missing or empty")
                    continue
                if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
                    messages = messages[:-1]
                messages = [*messages, {"role": "assistant", "content": answer}]
            found = validate_messages(messages)
            if found:
                problems.extend(f"{where}: {p}" for p in found)
                continue
            clean = [{"role": m["role"], "content": m["content"].strip()} for m in messages]
            intent = str(record.get("intent") or "unknown")
            category = str(record.get("category") or "")
            conversations.append(Conversation(clean, intent, category, f"{file.name}:{line_no}"))
    return conversations, problems


def _load_doc2dial(folder: Path, kind: str, *, window: int = 900) -> tuple[list[Conversation], list[str]]:
    import random

    from helpline.answering.prompts import load_prompt
    from helpline.datasets.doc2dial import heldout as doc2dial_heldout
    from helpline.platform.schemas import ChatMessage, Chunk, ScoredChunk

    docs, problems = {}, []
    for line_no, line in enumerate((folder / "docs.jsonl").read_text(encoding="utf-8").splitlines(), start=1):
        try:
            d = json.loads(line) if line.strip() else None
            if d is not None:
                docs[d["doc_id"]] = (d["title"], d["text"], d.get("domain", ""))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            problems.append(f"docs.jsonl line {line_no}: {type(e).__name__} {e}")
    by_domain: dict[str, list[str]] = {}
    for doc_id, (_, _, domain) in sorted(docs.items()):
        by_domain.setdefault(domain, []).append(doc_id)
    prompt = load_prompt("support")
    index = _chunk_index(docs)
    conversations = []
    for line_no, line in enumerate((folder / "qa.jsonl").read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            dial_id, doc_id, question = row["dial_id"], row["doc_id"], row["question"]
            start, reply = int(row["answer_start"]), row.get("agent_response")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            problems.append(f"qa.jsonl line {line_no}: {type(e).__name__} {e}")
            continue
        if doc2dial_heldout(dial_id) or not (reply or "").strip() or not question.strip():
            continue
        if doc_id not in docs:
            problems.append(f"qa.jsonl line {line_no}: doc_id {doc_id!r} is not in docs.jsonl")
            continue
        rng = random.Random(f"{dial_id}:{line_no}")
        title, text, domain = docs[doc_id]
        lo = max(0, start - window // 3)
        passages = [ScoredChunk(chunk=Chunk(chunk_id=f"{doc_id}#0", doc_id=doc_id, title=title,
                                            text=text[lo : lo + window]), score=1.0)]  # fmt: skip
        history = [(t.get("role"), t.get("utterance", "")) for t in row.get("history", [])[-4:]]
        query = " ".join([*(u for r, u in history if r == "user" and u), question])
        distractor = _hard_distractor(index, query, doc_id, rng)
        others = [] if distractor else [d for d in by_domain.get(domain, []) if d != doc_id]
        if others:  # nothing else shares a word with the question: a random same-domain region
            other = rng.choice(others)
            o_title, o_text, _ = docs[other]
            o_lo = rng.randrange(max(1, len(o_text) - window))
            distractor = Chunk(chunk_id=f"{other}#0", doc_id=other, title=o_title, text=o_text[o_lo : o_lo + window])
        if distractor is not None:
            passages.append(ScoredChunk(chunk=distractor, score=1.0))
            rng.shuffle(passages)
        turns: list[dict[str, str]] = []
        for role, text_ in [*history, ("user", question)]:
            role = "user" if role == "user" else "assistant"
            if not (text_ or "").strip():
                continue
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n" + text_.strip()  # doc2dial has runs of one speaker
            else:
                turns.append({"role": role, "content": text_.strip()})
        while turns and turns[0]["role"] != "user":
            turns.pop(0)
        messages = prompt.build([ChatMessage(**t) for t in turns], passages)
        conversations.append(
            Conversation(
                [*(m.model_dump() for m in messages), {"role": "assistant", "content": reply.strip()}],
                f"doc2dial:{domain}",
                "grounded",
                f"qa.jsonl:{line_no}",
            )
        )
    return conversations, problems


def _chunk_index(docs: dict[str, tuple[str, str, str]]) -> BM25Index:
    """BM25 over every document's chunks, cut as the knowledge base cuts them by default."""
    from helpline.platform.schemas import Document
    from helpline.platform.settings import RetrievalSettings
    from helpline.retrieval.bm25 import BM25Index
    from helpline.retrieval.ingest.chunking import chunk_document

    r = RetrievalSettings()
    chunks = [
        chunk
        for doc_id, (title, text, _) in sorted(docs.items())
        for chunk in chunk_document(Document(doc_id=doc_id, title=title, text=text), chunk_size=r.chunk_size,
                                    chunk_overlap=r.chunk_overlap)
    ]  # fmt: skip
    return BM25Index.build(chunks)


def _hard_distractor(index: BM25Index, query: str, gold_doc: str, rng: random.Random) -> Chunk | None:
    """One of the three chunks of other documents that BM25 ranks best for ``query`` (seeded), or None.

    A distractor that answers a neighbouring question teaches the model to answer from the passage that
    fits the question, not from whichever shares its words; a random one is told apart by topic alone.
    """
    hits = [index.chunks[cid] for cid, _ in index.search(query, k=12, access=("public",))]
    others = [c for c in hits if c.doc_id != gold_doc][:3]
    return rng.choice(others) if others else None


def validate_messages(messages: list) -> list[str]:
    """Every problem of one conversation: roles, empty turns, order, an assistant answer last."""
    problems: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            problems.append(f"messages[{i}]: missing 'role'")
            continue
        if m["role"] not in ROLES:
            problems.append(f"messages[{i}].role: {m['role']!r} is not one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            problems.append(f"messages[{i}].content: empty or missing")
    if problems:
        return problems
    turns = [m["role"] for m in messages if m["role"] != "system"]
    if any(m["role"] == "system" for m in messages[1:]):
        problems.append("a system message may only come first")
    if not turns or turns[-1] != "assistant":
        problems.append("the last message must be the assistant's answer")
    if "user" not in turns:
        problems.append("no user message")
    if any(a == b for a, b in itertools.pairwise(turns)):
        problems.append("user and assistant turns must alternate")
    return problems
