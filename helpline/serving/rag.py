"""Retrieval-augmented answering: search, grounded prompt, generate, cite (or abstain)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from helpline.platform.schemas import Answer, ChatMessage, Citation, ScoredChunk
from helpline.serving.engines.protocol import Generator
from helpline.serving.prompts import PromptTemplate, load_prompt

Search = Callable[..., list[ScoredChunk]]

HANDOFF = "call +1-800-555-0142 (Mon-Fri 8:00-20:00 CET), use the chat, or write to help@northwind.example."


@dataclass
class RAGPipeline:
    """Composes a knowledge-base search and a generator into cited answers."""

    search: Search
    generator: Generator
    prompt: PromptTemplate | None = None
    top_k: int = 4
    min_score: float = 0.0
    max_tokens: int = 192
    temperature: float = 0.0
    handoff: str = HANDOFF

    def __post_init__(self) -> None:
        self.prompt = self.prompt or load_prompt("support")

    def retrieve(self, conversation: list[ChatMessage], *, role: str = "customer") -> list[ScoredChunk]:
        """Search with the latest question and the user's previous turn for context."""
        return self.search(retrieval_query(conversation), k=self.top_k, role=role)

    def answer(self, conversation: list[ChatMessage], *, role: str = "customer") -> Answer:
        """One grounded answer with citations; abstains when nothing relevant is found."""
        start = time.perf_counter()
        passages = self.retrieve(conversation, role=role)
        if not passages or passages[0].score < self.min_score:
            return Answer(
                answer=self.prompt.abstention(self.handoff),  # type: ignore[union-attr]
                citations=[],
                model=self.generator.name,
                latency_ms=(time.perf_counter() - start) * 1000,
                abstained=True,
            )
        messages = self.prompt.build(conversation, passages)  # type: ignore[union-attr]
        generation = self.generator.generate(messages, max_tokens=self.max_tokens, temperature=self.temperature)
        return Answer(
            answer=generation.text,
            citations=citations(passages),
            model=generation.model,
            latency_ms=(time.perf_counter() - start) * 1000,
        )


def retrieval_query(conversation: list[ChatMessage], *, turns: int = 2) -> str:
    """The last ``turns`` user messages, newest last: follow-ups carry their context."""
    user_turns = [m.content for m in conversation if m.role == "user"]
    return "\n".join(user_turns[-turns:])


def citations(passages: list[ScoredChunk], *, with_text: bool = False) -> list[Citation]:
    """One citation per passage, best first."""
    return [
        Citation(
            doc_id=p.chunk.doc_id,
            title=p.chunk.title,
            chunk_id=p.chunk.chunk_id,
            score=round(p.score, 4),
            text=p.chunk.text if with_text else None,
        )
        for p in passages
    ]
