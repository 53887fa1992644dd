"""Deterministic fakes for fast unit tests, shipped in the package (like pydantic-ai's TestModel).

Integration tests use the real parts; these stand in only where a test is about our own logic.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from helpline.engines.protocol import Generation, StreamEnd
from helpline.platform.schemas import ChatMessage, Chunk, ScoredChunk

_WORD = re.compile(r"[a-z0-9]+")


class FakeEmbedder:
    """Hashed bag-of-words vectors: texts sharing words are similar, deterministically."""

    def __init__(self, dimension: int = 256) -> None:
        self.name = "fake-embedder"
        self.dimension = dimension
        self.calls: list[list[str]] = []

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dimension
        for word in _WORD.findall(text.lower()):
            bucket = int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension
            vec[bucket] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


@dataclass
class FakeGenerator:
    """Answers with a fixed text (or an echo of the question) and records what it was asked."""

    reply: str | None = None
    name: str = "fake-model"
    requests: list[list[ChatMessage]] = field(default_factory=list)

    def _text(self, messages: list[ChatMessage]) -> str:
        if self.reply is not None:
            return self.reply
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return f"Answer to: {question}"

    def generate(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Generation:
        self.requests.append(list(messages))
        words = self._text(messages).split()
        cut = len(words) > max_tokens  # one "token" a word
        return Generation(
            text=" ".join(words[:max_tokens]),
            model=self.name,
            prompt_tokens=10,
            completion_tokens=min(len(words), max_tokens),
            finish_reason="length" if cut else "stop",
        )

    def stream(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Iterator[str]:
        self.requests.append(list(messages))
        words = self._text(messages).split(" ")
        for word in words[:max_tokens]:
            yield word + " "
        yield StreamEnd("length" if len(words) > max_tokens else "stop")


class InMemoryStore:
    """A VectorStore in a dict, with the same filter subset ChromaStore supports (eq and $in)."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Chunk, list[float]]] = {}

    def upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        for chunk, vector in zip(chunks, vectors, strict=True):
            self._rows[chunk.chunk_id] = (chunk, vector)

    def query(self, vector: list[float], *, k: int, where: dict | None = None) -> list[ScoredChunk]:
        scored = [
            ScoredChunk(chunk=c, score=sum(a * b for a, b in zip(vector, v, strict=True)))
            for c, v in list(self._rows.values())  # a copy: a sync may write on another thread meanwhile
            if _matches(c, where)
        ]
        return sorted(scored, key=lambda s: -s.score)[:k]

    def delete(self, chunk_ids: list[str]) -> None:
        for cid in chunk_ids:
            self._rows.pop(cid, None)

    def chunks(self, where: dict | None = None) -> list[Chunk]:
        return [c for c, _ in list(self._rows.values()) if _matches(c, where)]

    def count(self) -> int:
        return len(self._rows)


def _matches(chunk: Chunk, where: dict | None) -> bool:
    for key, cond in (where or {}).items():
        value = getattr(chunk, key)
        if isinstance(cond, dict) and "$in" in cond:
            if value not in cond["$in"]:
                return False
        elif value != cond:
            return False
    return True
