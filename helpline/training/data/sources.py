"""Read conversations from the three supported layouts, refusing malformed input with its location.

``bitext:FILE.csv``     the Bitext layout: ``instruction``, ``response``, ``intent`` (+ ``category``, ...)
``chat:FILE.jsonl``     one ``{"messages": [{"role": ..., "content": ...}, ...], "intent"?: ...}`` per line
``reviewed:FILE.jsonl`` conversations reviewed in the platform: ``{"messages": [...], "corrected_answer":
                        "...", "intent"?: ...}``; a trailing assistant turn (the bot's wrong answer) is
                        replaced by the reviewer's corrected answer
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from helpline.platform.errors import DataError, NotFoundError

ROLES = ("system", "user", "assistant")
BITEXT_REQUIRED = ("instruction", "response", "intent")
SOURCE_KINDS = ("bitext", "chat", "reviewed")
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
    if not file.is_file():
        raise NotFoundError(f"source file {file} does not exist", hint="check the path after the kind prefix")
    return kind, file


def load_source(spec: str, *, skip_invalid: bool = False) -> tuple[list[Conversation], list[str]]:
    """Load one source. Returns the conversations and the problems of rows that were skipped.

    Without ``skip_invalid`` any malformed row refuses the whole file with a DataError that names
    the file, the row and the column or field.
    """
    kind, file = parse_source(spec)
    loader = _load_bitext if kind == "bitext" else _load_jsonl
    conversations, problems = loader(file, kind)
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
