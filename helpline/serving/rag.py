"""Retrieval-augmented answering: search, grounded prompt, generate, verify, cite (or abstain).

The gateway uses the same steps as :meth:`RAGPipeline.answer`, split so that it can stream:
:meth:`RAGPipeline.prepare` (retrieve, decide to abstain, build the prompt), then generation,
then :meth:`RAGPipeline.verify` on the finished text.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from helpline.platform.schemas import Answer, ChatMessage, Citation, ScoredChunk
from helpline.platform.text import content_stems
from helpline.serving.abstention import declines
from helpline.serving.engines.protocol import Generator
from helpline.serving.prompts import PromptTemplate, load_prompt

Search = Callable[..., list[ScoredChunk]]

HANDOFF = "call +1-800-555-0142 (Mon-Fri 8:00-20:00 CET), use the chat, or write to help@northwind.example."


@dataclass
class Verdict:
    """What a verifier concluded about an answer."""

    grounded: bool
    score: float = 1.0
    reason: str = ""


class Verifier(Protocol):
    """Checks an answer against the passages it was given (e.g. a hallucination detector)."""

    def verify(self, answer: str, passages: list[ScoredChunk]) -> Verdict: ...


class NoVerifier:
    """The default: accepts every answer. Replace it with evaluation's groundedness check."""

    def verify(self, answer: str, passages: list[ScoredChunk]) -> Verdict:
        return Verdict(grounded=True, reason="not verified")


@dataclass
class Check:
    """What becomes of a generated answer: kept, ``declined`` (it says it does not know, so there is
    nothing to verify) or ``withdrawn`` (the verifier found it unsupported and the pipeline abstains)."""

    verdict: Verdict | None
    declined: bool = False
    withdrawn: bool = False

    @property
    def handed_over(self) -> bool:
        return self.declined or self.withdrawn


@dataclass
class Prepared:
    """Everything decided before generation starts."""

    passages: list[ScoredChunk]
    messages: list[ChatMessage] = field(default_factory=list)
    abstained: bool = False
    abstention: str = ""
    retrieval_ms: float = 0.0


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
    verifier: Verifier = field(default_factory=NoVerifier)
    #: Scores the best passage for the abstention decision when the ranking's own scores carry no
    #: relevance (hybrid search fuses by rank, so its top score is the same for any question).
    relevance: Search | None = None
    #: When the verifier rejects a whole (non-streamed) answer, replace it with the abstention.
    abstain_when_unverified: bool = True

    def __post_init__(self) -> None:
        self.prompt = self.prompt or load_prompt("support")

    def retrieve(self, conversation: list[ChatMessage], *, role: str = "customer") -> list[ScoredChunk]:
        """Search with the latest question, the user's earlier turns given as its context.

        The knowledge base decides how many earlier turns it searches with (``history_turns``, 6 by
        default: on doc2dial that lifted hybrid recall@5 from 0.61 for the question alone to 0.93).
        """
        question, history = split_question(conversation)
        return self.search(question, k=self.top_k, role=role, history=history)

    def abstention_text(self) -> str:
        return self.prompt.abstention(self.handoff)  # type: ignore[union-attr]

    def prepare(self, conversation: list[ChatMessage], *, role: str = "customer") -> Prepared:
        """Retrieve, and either decide to abstain or build the grounded prompt."""
        start = time.perf_counter()
        passages = self.retrieve(conversation, role=role)
        best = passages[0].score if passages else float("-inf")
        if passages and self.relevance is not None:
            question, history = split_question(conversation)
            scored = self.relevance(question, k=1, role=role, history=history)
            best = scored[0].score if scored else float("-inf")
        took = (time.perf_counter() - start) * 1000
        if not passages or best < self.min_score:
            return Prepared(passages=[], abstained=True, abstention=self.abstention_text(), retrieval_ms=took)
        messages = self.prompt.build(conversation, passages)  # type: ignore[union-attr]
        return Prepared(passages=passages, messages=messages, retrieval_ms=(time.perf_counter() - start) * 1000)

    def verify(self, text: str, passages: list[ScoredChunk]) -> Verdict:
        return self.verifier.verify(text, passages)

    def check(self, text: str, passages: list[ScoredChunk]) -> Check:
        """Whether a generated answer reaches the customer or the handoff takes its place."""
        if declines(text):
            return Check(None, declined=True)
        verdict = self.verify(text, passages)
        return Check(verdict, withdrawn=not verdict.grounded and self.abstain_when_unverified)

    def answer(self, conversation: list[ChatMessage], *, role: str = "customer") -> Answer:
        """One grounded answer with citations; abstains when nothing relevant is found."""
        return self.complete(self.prepare(conversation, role=role))

    def complete(self, prepared: Prepared) -> Answer:
        """Generate, verify and cite the answer to a prepared turn, or give its abstention. The latency
        counts the turn's retrieval (``prepared.retrieval_ms``) and what follows it."""
        start = time.perf_counter() - prepared.retrieval_ms / 1000
        if prepared.abstained:
            return Answer(
                answer=prepared.abstention,
                citations=[],
                model=self.generator.name,
                latency_ms=(time.perf_counter() - start) * 1000,
                abstained=True,
            )
        generation = self.generator.generate(
            prepared.messages, max_tokens=self.max_tokens, temperature=self.temperature
        )
        if self.check(generation.text, prepared.passages).handed_over:
            return Answer(
                answer=self.abstention_text(),
                model=generation.model,
                latency_ms=(time.perf_counter() - start) * 1000,
                abstained=True,
            )
        return Answer(
            answer=generation.text,
            citations=citations(prepared.passages, answer=generation.text),
            model=generation.model,
            latency_ms=(time.perf_counter() - start) * 1000,
        )


def split_question(conversation: list[ChatMessage]) -> tuple[str, list[str]]:
    """The latest user message and the user's earlier messages, oldest first."""
    user_turns = [m.content for m in conversation if m.role == "user"]
    if not user_turns:
        return "", []
    return user_turns[-1], user_turns[:-1]


def support(answer: str, passage: str) -> float:
    """How much of the answer the passage accounts for: the mean of the shares of the answer's content
    words and of its content-word bigrams found in the passage (crude stems, so plurals match)."""
    said = content_stems(answer)
    if not said:
        return 0.0
    known = content_stems(passage)
    words = len(set(said) & set(known)) / len(set(said))
    pairs = set(itertools.pairwise(said))
    if not pairs:
        return words
    return (words + len(pairs & set(itertools.pairwise(known))) / len(pairs)) / 2


def attribute(answer: str, passages: list[ScoredChunk], *, keep: float = 0.5) -> list[ScoredChunk]:
    """The passages the answer draws on, in retrieval order: those whose :func:`support` is at least
    ``keep`` times the best-supported one's. Retrieval's order stays because it names the right source
    more often than word overlap does (doc2dial: top-1 0.65 against 0.575). An answer no passage
    accounts for (or an empty one) gives no evidence either way, so every passage is kept."""
    if not passages or not answer.strip():
        return list(passages)
    scores = [support(answer, p.chunk.text) for p in passages]
    best = max(scores)
    return [p for p, score in zip(passages, scores, strict=True) if score >= keep * best]


def citations(passages: list[ScoredChunk], *, answer: str | None = None, with_text: bool = False) -> list[Citation]:
    """One citation per passage, best first. Given the answer, only the passages it draws on
    (:func:`attribute`): a customer is not sent to a source the answer did not use."""
    if answer is not None:
        passages = attribute(answer, passages)
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
