"""Read conversations from the four supported layouts, refusing malformed input with its location.

``bitext:FILE.csv``     the Bitext layout (``datasets.bitext``): ``instruction``, ``response``, ``intent``
                        (+ ``category``, ...)
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

import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from helpline.answering.prompts import load_prompt
from helpline.datasets.bitext import read_bitext
from helpline.datasets.doc2dial import heldout, history_turns, read_leniently
from helpline.platform.errors import DataError, NotFoundError
from helpline.platform.schemas import ChatMessage, Chunk, Document, ScoredChunk
from helpline.platform.settings import RetrievalSettings
from helpline.retrieval.bm25 import BM25Index
from helpline.retrieval.ingest.chunking import chunk_document

ROLES = ("system", "user", "assistant")
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
    rows, problems = read_bitext(file)
    conversations = [
        Conversation(
            [{"role": "user", "content": r.instruction}, {"role": "assistant", "content": r.response}],
            r.intent,
            r.category,
            f"{file.name}:{r.row}",
        )
        for r in rows
    ]
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
    problems: list[str] = []
    docs = {doc_id: fields for _, (doc_id, fields) in read_leniently(folder / "docs.jsonl", _document, problems)}
    library = _Library.build(docs)
    prompt = load_prompt("support")
    conversations = []
    for line_no, q in read_leniently(folder / "qa.jsonl", _Question.parse, problems):
        if heldout(q.dial_id) or not (q.reply or "").strip() or not q.question.strip():
            continue
        if q.doc_id not in docs:
            problems.append(f"qa.jsonl line {line_no}: doc_id {q.doc_id!r} is not in docs.jsonl")
            continue
        history = history_turns(q.record, last=4)
        query = " ".join([*(text for role, text in history if role == "user"), q.question])
        rng = random.Random(f"{q.dial_id}:{line_no}")
        passages = library.passages(q.doc_id, q.answer_start, query, rng, window=window)
        messages = prompt.build(_chat_turns(history, q.question), passages)
        conversations.append(
            Conversation(
                [*(m.model_dump() for m in messages), {"role": "assistant", "content": q.reply.strip()}],
                f"doc2dial:{docs[q.doc_id][2]}",
                "grounded",
                f"qa.jsonl:{line_no}",
            )
        )
    return conversations, problems


def _document(record: dict) -> tuple[str, tuple[str, str, str]]:
    """(doc_id, (title, text, domain)) of a docs.jsonl line."""
    fields = (record["title"], record["text"], record.get("domain", ""))
    return record["doc_id"], fields


@dataclass(frozen=True)
class _Question:
    """What a training example needs of a qa.jsonl line."""

    dial_id: str
    doc_id: str
    question: str
    answer_start: int
    reply: str | None  # the human agent's reply: the answer to learn
    record: dict  # the whole line, for its history

    @classmethod
    def parse(cls, record: dict) -> _Question:
        return cls(
            record["dial_id"],
            record["doc_id"],
            record["question"],
            int(record["answer_start"]),
            record.get("agent_response"),
            record,
        )


def _chat_turns(history: list[tuple[str, str]], question: str) -> list[ChatMessage]:
    """The earlier turns and the question as chat turns that alternate and start with the user's."""
    turns: list[dict[str, str]] = []
    for role, text in [*history, ("user", question)]:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n" + text.strip()  # doc2dial has runs of one speaker
        else:
            turns.append({"role": role, "content": text.strip()})
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    return [ChatMessage(**t) for t in turns]


@dataclass(frozen=True)
class _Library:
    """The documents passages are cut from: (title, text, domain) by doc_id, each domain's doc_ids, BM25."""

    docs: dict[str, tuple[str, str, str]]
    by_domain: dict[str, list[str]]
    index: BM25Index

    @classmethod
    def build(cls, docs: dict[str, tuple[str, str, str]]) -> _Library:
        by_domain: dict[str, list[str]] = {}
        for doc_id, (_, _, domain) in sorted(docs.items()):
            by_domain.setdefault(domain, []).append(doc_id)
        return cls(docs, by_domain, _chunk_index(docs))

    def passages(self, doc_id: str, start: int, query: str, rng: random.Random, *, window: int) -> list[ScoredChunk]:
        """The gold passage (``window`` characters around the answer) and a distractor, in seeded order."""
        title, text, _ = self.docs[doc_id]
        lo = max(0, start - window // 3)
        gold = Chunk(chunk_id=f"{doc_id}#0", doc_id=doc_id, title=title, text=text[lo : lo + window])
        passages = [ScoredChunk(chunk=gold, score=1.0)]
        distractor = _hard_distractor(self.index, query, doc_id, rng) or self._same_domain_region(doc_id, rng, window)
        if distractor is not None:
            passages.append(ScoredChunk(chunk=distractor, score=1.0))
            rng.shuffle(passages)
        return passages

    def _same_domain_region(self, gold_doc: str, rng: random.Random, window: int) -> Chunk | None:
        """A random region of another document of the gold one's domain, for a question that shares no word
        with any other document's chunks; None when the domain has no other document."""
        others = [d for d in self.by_domain.get(self.docs[gold_doc][2], []) if d != gold_doc]
        if not others:
            return None
        other = rng.choice(others)
        title, text, _ = self.docs[other]
        lo = rng.randrange(max(1, len(text) - window))
        return Chunk(chunk_id=f"{other}#0", doc_id=other, title=title, text=text[lo : lo + window])


def _chunk_index(docs: dict[str, tuple[str, str, str]]) -> BM25Index:
    """BM25 over every document's chunks, cut as the knowledge base cuts them by default."""
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
