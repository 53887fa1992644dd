"""The prompt set a teacher answers: KB questions, Bitext instructions and reviewed conversations.

KB questions come from the knowledge base's section headings, deterministically, so that a rerun
builds the same prompts (and the teacher cache keeps answering only what is new).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from helpline.platform.schemas import Chunk
from helpline.training.data.sources import load_source

_QUESTION_START = re.compile(r"^(how|what|when|where|why|can|can't|do|does|is|are|which|who|should)\b", re.I)
_SPACE = re.compile(r"\s+")


@dataclass
class DistillPrompt:
    """A conversation ending with a customer turn, and where it came from."""

    conversation: list[dict[str, str]]
    source: str
    intent: str = "unknown"
    origin: str = ""  # "file:row" or "kb:chunk_id", never the content
    extra: dict = field(default_factory=dict)

    @property
    def question(self) -> str:
        return next(m["content"] for m in reversed(self.conversation) if m["role"] == "user")

    def key(self) -> str:
        """Normalized conversation text: equal keys are duplicate prompts."""
        return normalize(" \n ".join(f"{m['role']}: {m['content']}" for m in self.conversation))


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() or len(text) == 1 else text


def question_from_heading(heading: str, title: str) -> str:
    """A customer-style question for a section: questions stay, topics become 'can you explain ...?'."""
    heading, title = heading.strip().strip("#").strip(), title.strip()
    if heading.endswith("?"):
        return heading
    if _QUESTION_START.match(heading):
        return heading.rstrip(".") + "?"
    if not heading or normalize(heading) == normalize(title):
        return f"Can you tell me about {_lower_first(title)}?"
    return f"About {_lower_first(title)}: can you explain {_lower_first(heading)}?"


def kb_questions(chunks: Iterable[Chunk], limit: int) -> list[DistillPrompt]:
    """One question per distinct (document, section heading), in chunk-id order."""
    seen, out = set(), []
    for chunk in sorted(chunks, key=lambda c: (c.doc_id, c.chunk_id)):
        heading = chunk.section.split(">")[-1].strip() if chunk.section else ""
        if (chunk.doc_id, heading) in seen:
            continue
        seen.add((chunk.doc_id, heading))
        question = question_from_heading(heading, chunk.title)
        out.append(
            DistillPrompt(
                [{"role": "user", "content": question}], "kb", intent=chunk.doc_id, origin=f"kb:{chunk.chunk_id}"
            )
        )
        if len(out) >= limit:
            break
    return out


def _sample(items: list, limit: int, seed: int) -> list:
    if len(items) <= limit:
        return items
    picked = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in picked]


def bitext_prompts(path: str, limit: int, seed: int) -> list[DistillPrompt]:
    """The customer instructions of a Bitext CSV (its answers are replaced by the teacher's)."""
    conversations, _ = load_source(f"bitext:{path}", skip_invalid=True)
    picked = _sample(conversations, limit, seed)
    return [DistillPrompt(c.messages[:-1], "bitext", intent=c.intent, origin=c.origin) for c in picked]


def reviewed_prompts(path: str, limit: int, seed: int) -> list[DistillPrompt]:
    """Reviewed conversations up to the last customer turn; the reviewer's answer is kept for reference."""
    conversations, _ = load_source(f"reviewed:{path}", skip_invalid=True)
    picked = _sample(conversations, limit, seed)
    return [
        DistillPrompt(
            [m for m in c.messages[:-1] if m["role"] != "system"],
            "reviewed",
            intent=c.intent,
            origin=c.origin,
            extra={"reviewed_answer": c.messages[-1]["content"]},
        )
        for c in picked
    ]


def dedupe_prompts(prompts: list[DistillPrompt]) -> tuple[list[DistillPrompt], int]:
    """Drop prompts whose normalized conversation was seen before; returns kept and dropped count."""
    seen, kept = set(), []
    for p in prompts:
        if p.key() not in seen:
            seen.add(p.key())
            kept.append(p)
    return kept, len(prompts) - len(kept)


def file_sha256(path: str) -> str:

    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def prompt_hash(
    messages: list[dict], teacher_model: str, max_tokens: int, temperature: float, stop: list[str] | None = None
) -> str:
    """The teacher-cache key: the exact request (prompt with passages, model, decoding, stop sequences)."""
    request = [messages, teacher_model, max_tokens, temperature, *([list(stop)] if stop else [])]
    payload = json.dumps(request, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()
