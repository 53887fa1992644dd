"""Run a suite's cases through a responder (the RAG pipeline or a bare generator) and score them."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from helpline.answering.rag import Prepared
from helpline.evaluation.regression.cases import Case
from helpline.evaluation.regression.evaluators import Embed, Output, Score, evaluators_for, is_abstention
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage, Chunk, ScoredChunk


class Responder(Protocol):
    """Answers one case; ``name`` identifies the model/configuration in reports."""

    name: str

    def respond(self, case: Case) -> tuple[Output, list[str]]:
        """The output and the passages it was given (for the hallucination detector)."""
        ...


class Verifier(Protocol):
    """Anything with the detector's ``score(answer, passages, question)``."""

    def score(self, answer: str, passages: list[str], question: str | None = None) -> float: ...


def conversation(case: Case) -> list[ChatMessage]:
    """The case's history followed by its question."""
    return [
        *(ChatMessage(role=t.role, content=t.content) for t in case.history),
        ChatMessage(role="user", content=case.question),
    ]


def context_passages(case: Case) -> list[ScoredChunk]:
    """The case's own context documents as passages (they stand in for retrieval)."""
    return [
        ScoredChunk(
            chunk=Chunk(chunk_id=f"{d.doc_id}#0", doc_id=d.doc_id, title=d.title or d.doc_id, text=d.text), score=1.0
        )
        for d in case.context
    ]


@dataclass
class RAGResponder:
    """Answers through a ``RAGPipeline``; cases with context documents use them instead of the KB."""

    pipeline: Any
    name: str = "rag"

    def respond(self, case: Case) -> tuple[Output, list[str]]:
        """The answer as served (the pipeline's decision: answered, fallback or handoff); a case's own
        context documents stand in for retrieval and go through the same decision."""
        conv = conversation(case)
        if case.context:
            passages = context_passages(case)
            prepared = Prepared(
                passages=passages, question=case.question, messages=self.pipeline.prompt.build(conv, passages)
            )
        else:
            prepared = self.pipeline.prepare(conv)
        served, _ = self.pipeline.serve(prepared)
        given = [] if served.abstained else [p.chunk.text for p in prepared.passages]
        return Output(served.text, [c.doc_id for c in served.citations], served.abstained), given


@dataclass
class DirectResponder:
    """Answers with a generator alone (no retrieval): the 'model only' arm of an A/B comparison."""

    generator: Any
    prompt: Any
    max_tokens: int = 192
    use_context: bool = True
    name: str = "direct"

    def respond(self, case: Case) -> tuple[Output, list[str]]:
        passages = context_passages(case) if self.use_context else []
        messages = self.prompt.build(conversation(case), passages)
        gen = self.generator.generate(messages, max_tokens=self.max_tokens, temperature=0.0)
        return Output(gen.text, []), [p.chunk.text for p in passages]


@dataclass
class CaseResult:
    """One case's answer and scores."""

    id: str
    category: str
    question: str
    answer: str
    citations: list[str]
    abstained: bool
    scores: list[Score]
    passed: bool
    latency_ms: float
    hallucination: float | None = None
    judge: dict[str, int | None] | None = None  # rubric scores, when a judge was asked

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SuiteResult:
    """All cases of a suite for one responder, with summaries."""

    suite: str
    model: str
    cases: list[CaseResult] = field(default_factory=list)
    judge: dict[str, Any] | None = None  # the judge's rubric means and agreement with the rules, when asked

    def summary(self) -> dict[str, Any]:
        """Pass rates overall and per category, mean score per evaluator, mean hallucination."""
        by_cat: dict[str, list[CaseResult]] = defaultdict(list)
        by_eval: dict[str, list[float]] = defaultdict(list)
        for c in self.cases:
            by_cat[c.category].append(c)
            for s in c.scores:
                by_eval[s.name].append(s.score)
        hall = [c.hallucination for c in self.cases if c.hallucination is not None]
        return {
            "suite": self.suite,
            "model": self.model,
            "n": len(self.cases),
            "pass_rate": _rate(self.cases),
            # Mean over cases of the mean evaluator score: moves when pass/fail does not (small models).
            "mean_score": round(sum(_case_score(c) for c in self.cases) / max(1, len(self.cases)), 4),
            "categories": {
                k: {"n": len(v), "pass_rate": _rate(v), "mean_score": round(sum(map(_case_score, v)) / len(v), 4)}
                for k, v in sorted(by_cat.items())
            },
            "evaluators": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_eval.items())},
            "abstention_rate": round(sum(c.abstained for c in self.cases) / max(1, len(self.cases)), 4),
            "hallucination_mean": round(sum(hall) / len(hall), 4) if hall else None,
            "median_latency_ms": _median([c.latency_ms for c in self.cases]),
            **({"judge": self.judge} if self.judge is not None else {}),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "cases": [c.to_dict() for c in self.cases]}


def run_case(
    case: Case, responder: Responder, *, embedder: Embed | None = None, verifier: Verifier | None = None
) -> CaseResult:
    """Answer one case and apply every evaluator its expectations ask for."""
    start = time.perf_counter()
    output, passages = responder.respond(case)
    latency = (time.perf_counter() - start) * 1000
    scores = [e.evaluate(output) for e in evaluators_for(case.expect, embedder=embedder)]
    hallucination = None
    if verifier is not None and passages and output.text and not is_abstention(output):
        hallucination = round(verifier.score(output.text, passages, case.question), 4)
    return CaseResult(
        id=case.id,
        category=case.category,
        question=case.question,
        answer=output.text,
        citations=output.citations,
        abstained=is_abstention(output),
        scores=scores,
        passed=all(s.passed for s in scores),
        latency_ms=round(latency, 1),
        hallucination=hallucination,
    )


def run_suite(
    name: str,
    cases: list[Case],
    responder: Responder,
    *,
    embedder: Embed | None = None,
    verifier: Verifier | None = None,
    progress: bool = False,
) -> SuiteResult:
    """Run every case (in order) and collect the results."""
    result = SuiteResult(suite=name, model=responder.name)
    iterator: Any = cases
    if progress:
        tqdm = require("tqdm", "train").tqdm

        iterator = tqdm(cases, desc=f"{name} · {responder.name}", unit="case")
    for case in iterator:
        result.cases.append(run_case(case, responder, embedder=embedder, verifier=verifier))
    return result


def _case_score(case: CaseResult) -> float:
    return sum(s.score for s in case.scores) / len(case.scores) if case.scores else 1.0


def _rate(cases: list[CaseResult]) -> float:
    return round(sum(c.passed for c in cases) / len(cases), 4) if cases else 0.0


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    mid = len(s) // 2
    return round(s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2, 1)
