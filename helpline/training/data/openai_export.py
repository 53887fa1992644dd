"""A prepared dataset as OpenAI chat fine-tuning JSONL, checked the way the managed fine-tuning APIs check an upload.

The checks are those of OpenAI's published format checker for chat fine-tuning data (its error names are kept, so a
report reads like the API's): every line an object with a ``messages`` list; every message a ``role`` and a
``content`` and no other key but ``name`` and ``weight``; roles system, user or assistant; content a non-empty
string; at least one assistant message; ``weight`` 0 or 1 on assistant messages only. Then what the API refuses or
charges for: fewer than 10 examples, and examples longer than the model's fine-tuning context (tokens estimated at
4 characters each plus 3 per message, since the API's tokenizer is not available offline; the estimate errs long
for English).

helpline's own fields (``intent``, ``category``, ``origin``) are dropped: the API refuses unknown keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpline.platform.errors import DataError

ROLES = {"system", "user", "assistant"}
MESSAGE_KEYS = {"role", "content", "name", "weight"}
MIN_EXAMPLES = 10  # the API refuses a training file with fewer


@dataclass
class ExportReport:
    """What was written and what the checks found (``errors``: by the checker's names, with example lines)."""

    out: str
    examples: int
    errors: dict[str, list[int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    estimated_tokens: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "examples": self.examples, "errors": {k: v[:10] for k, v in self.errors.items()},
                "warnings": self.warnings, "estimated_tokens": self.estimated_tokens}  # fmt: skip


def check_example(example: Any) -> list[str]:
    """The format errors of one example, named as OpenAI's checker names them (empty: valid)."""
    if not isinstance(example, dict):
        return ["data_type"]
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["missing_messages_list"]
    if set(example) - {"messages", "tools", "parallel_tool_calls"}:
        return ["example_unrecognized_key"]
    errors = []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            errors.append("message_missing_key")
            continue
        if set(message) - MESSAGE_KEYS:
            errors.append("message_unrecognized_key")
        if message["role"] not in ROLES:
            errors.append("unrecognized_role")
        content = message["content"]
        if not isinstance(content, str) or not content.strip():
            errors.append("missing_content")
        if "weight" in message and (message["role"] != "assistant" or message["weight"] not in (0, 1)):
            errors.append("invalid_weight")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        errors.append("example_missing_assistant_message")
    return sorted(set(errors))


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A conservative token count of a conversation without the API's tokenizer."""
    return sum(3 + len(str(m.get("content", ""))) // 4 + 1 for m in messages) + 3


def export_openai(dataset: Path, *, split: str, out: Path, max_tokens: int = 65536) -> ExportReport:
    """Write ``split`` of the prepared dataset folder ``dataset`` to ``out`` as OpenAI chat JSONL and check it.
    A file with format errors is not written (DataError naming them); warnings do not stop it."""
    source = dataset / f"{split}.jsonl"
    if not source.is_file():
        raise DataError(f"{dataset} has no {split}.jsonl", hint="use --split train, validation or test")
    rows, errors = [], {}
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            errors.setdefault("data_type", []).append(number)
            continue
        example = {"messages": [{k: m[k] for k in m if k in MESSAGE_KEYS} if isinstance(m, dict) else m
                                for m in row.get("messages", [])]} if isinstance(row, dict) else row  # fmt: skip
        for error in check_example(example):
            errors.setdefault(error, []).append(number)
        rows.append(example)
    report = ExportReport(out=str(out), examples=len(rows), errors=errors)
    if errors:
        found = ", ".join(f"{k} ({len(v)}, e.g. line {v[0]})" for k, v in sorted(errors.items()))
        raise DataError(f"{source} would be refused by the fine-tuning API: {found}",
                        hint="fix the source conversations and prepare the dataset again")  # fmt: skip
    lengths = [estimate_tokens(r["messages"]) for r in rows]
    report.estimated_tokens = {"total": sum(lengths), "longest": max(lengths, default=0)}
    if len(rows) < MIN_EXAMPLES:
        report.warnings.append(f"{len(rows)} examples: the API needs at least {MIN_EXAMPLES}")
    too_long = sum(n > max_tokens for n in lengths)
    if too_long:
        report.warnings.append(f"{too_long} examples may be over {max_tokens} tokens: the API truncates them")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    partial.replace(out)
    return report
