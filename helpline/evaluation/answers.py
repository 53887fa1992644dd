"""`helpline eval answers`: what a customer is served, end to end, scored.

Each question goes through the same code as the gateway: retrieval for the caller's role, the
grounded prompt, generation, and the one answer decision (``serving/decision.py``: answered,
fallback or handoff, with citations). ``via`` picks the entry point: ``pipeline`` (what `helpline
ask` runs), ``gateway`` (a `POST /v1/chat/completions` through the gateway app) or ``stream`` (the
same request streamed, its events joined as a client would).

Per question: the served text, the outcome, whether it is correct, and whether it is *wrong served*
(the customer got an answer, generated or quoted, that is not correct). A question file entry is
correct when the served text contains one of its ``expect`` phrases (for a question no article
answers: when it is handed off); a doc2dial question when the gold span supports the served text
(the detector) and it is similar to the agent's reply. ``forbid`` phrases (internal facts) must never
reach the caller.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from helpline.evaluation.regression.evaluators import cosine
from helpline.platform.errors import ConfigError
from helpline.platform.files import read_jsonl, read_yaml
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ChatMessage
from helpline.platform.text import contains

Via = Literal["pipeline", "gateway", "stream"]
VIAS: tuple[str, ...] = ("pipeline", "gateway", "stream")


class AnswerCase(BaseModel):
    """One question of an answer set (``sample_kb/QUESTIONS.yaml`` shows the format)."""

    question: str = Field(min_length=1)
    doc_id: str | None = Field(None, description="The article that answers it; null when none does.")
    expect: list[str] = Field(default_factory=list, description="A correct answer contains one of these.")
    role: Literal["customer", "staff"] = "customer"
    history: list[str] = Field(default_factory=list, description="The user's earlier messages, oldest first.")
    forbid: list[str] = Field(default_factory=list, description="Facts that must never be served to this role.")
    id: str = ""
    #: doc2dial: the gold span (with context) and the human agent's reply; the conversation so far.
    gold_passage: str | None = None
    reference: str | None = None
    conversation: list[ChatMessage] = Field(default_factory=list)

    @property
    def answerable(self) -> bool:
        return self.doc_id is not None

    def messages(self) -> list[ChatMessage]:
        if self.conversation:
            return self.conversation
        earlier = [ChatMessage(role="user", content=h) for h in self.history]
        return [*earlier, ChatMessage(role="user", content=self.question)]


def read_cases(path: Path) -> list[AnswerCase]:
    """Questions from a YAML list (or a mapping with ``questions``) or a JSONL file; each row checked."""
    hint = "a question file is a YAML list (or JSONL) of {question, doc_id, expect} rows; see sample_kb/QUESTIONS.yaml"
    rows: Any
    if path.suffix == ".jsonl":
        rows = read_jsonl(path, required=("question",), hint=hint)
    else:
        rows = read_yaml(path, what="question file", hint=hint)
        rows = rows.get("questions", rows) if isinstance(rows, dict) else rows
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{path} has no questions", hint=hint)
    cases = []
    for i, row in enumerate(rows, 1):
        try:
            case = AnswerCase.model_validate(row)
        except ValueError as e:
            raise ConfigError(f"{path}: question {i} is not valid: {e}", hint="see sample_kb/QUESTIONS.yaml") from e
        if case.answerable and not case.expect and case.gold_passage is None:
            raise ConfigError(f"{path}: question {i} names doc_id {case.doc_id!r} but no expect phrases",
                              hint="list the phrases a correct answer contains, or set doc_id: null")  # fmt: skip
        cases.append(case.model_copy(update={"id": case.id or f"q{i}"}))
    return cases


@dataclass
class ServedAnswer:
    """What one entry point served for one question."""

    text: str
    outcome: str
    citations: list[str]
    latency_ms: float
    claim: str = ""  # the answer without the fallback's framing (what the detector judges)
    reason: str = ""
    draft: str | None = None


@dataclass
class Judged:
    """One question's served answer and its verdict."""

    id: str
    question: str
    role: str
    doc_id: str | None
    outcome: str
    text: str
    citations: list[str]
    correct: bool
    wrong_served: bool
    leaked: list[str]
    latency_ms: float
    reason: str = ""
    draft: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Doc2dialJudge:
    """doc2dial correctness: the gold span supports the answer (detector) and it is similar to the
    agent's reply (embedding cosine of at least ``min_similarity``). Supported means the gold span
    supports the answer as a whole or one of its sentences: a quote may carry a sentence of context
    from beside the span. ``strict`` (in the detail) asks it of every sentence, as the gateway's check does."""

    detector: Any
    embed: Any
    min_similarity: float = 0.4

    def __call__(self, case: AnswerCase, served: ServedAnswer) -> tuple[bool, dict[str, Any]]:
        claim = served.claim or served.text
        verdict = self.detector.verdict(claim, [case.gold_passage or ""])
        best = min([verdict.answer_score, *(s.score for s in verdict.sentences)])
        similarity = None
        if case.reference:
            a, b = self.embed([case.reference, claim])
            similarity = round(cosine(a, b), 4)
        similar = similarity is None or similarity >= self.min_similarity
        detail = {
            "gold_support": round(1 - best, 4),
            "similarity": similarity,
            "strict": bool(similar and not verdict.hallucinated),
        }
        return bool(similar and best < verdict.threshold), detail


def judge(case: AnswerCase, served: ServedAnswer, *, doc2dial: Doc2dialJudge | None = None) -> Judged:
    """Correct, wrong served and leaks of one served answer."""
    handed_off = served.outcome == "handoff"
    detail: dict[str, Any] = {}
    if not case.answerable:
        correct = handed_off
    elif handed_off:
        correct = False
    elif case.gold_passage is not None and doc2dial is not None:
        correct, detail = doc2dial(case, served)
    else:
        correct = any(contains(served.text, p) for p in case.expect)
    leaked = [p for p in case.forbid if contains(served.text, p)]
    return Judged(
        id=case.id, question=case.question, role=case.role, doc_id=case.doc_id, outcome=served.outcome,
        text=served.text, citations=served.citations, correct=correct,
        wrong_served=not handed_off and not correct, leaked=leaked, latency_ms=round(served.latency_ms, 1),
        reason=served.reason, draft=served.draft, detail=detail,
    )  # fmt: skip


def summarise(results: list[Judged]) -> dict[str, Any]:
    """Rates over answerable and unanswerable questions, latency, and the outcome counts."""
    answerable = [r for r in results if r.doc_id is not None]
    unanswerable = [r for r in results if r.doc_id is None]
    latencies = sorted(r.latency_ms for r in results)

    def rate(rows: list[Judged], pick: Any) -> float | None:
        return round(sum(1 for r in rows if pick(r)) / len(rows), 4) if rows else None

    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    return {
        "questions": len(results),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "correct_rate": rate(answerable, lambda r: r.correct),
        **(
            {"correct_rate_strict": rate(answerable, lambda r: r.detail.get("strict", False))}
            if any("strict" in r.detail for r in answerable)
            else {}
        ),
        "wrong_served_rate": rate(answerable, lambda r: r.wrong_served),
        "handoff_rate_answerable": rate(answerable, lambda r: r.outcome == "handoff"),
        "fallback_rate_answerable": rate(answerable, lambda r: r.outcome == "fallback"),
        "abstention_rate_unanswerable": rate(unanswerable, lambda r: r.outcome == "handoff"),
        "wrong_served_unanswerable": rate(unanswerable, lambda r: r.wrong_served),
        "internal_leaks": sum(len(r.leaked) for r in results),
        "outcomes": outcomes,
        "latency_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        # nearest rank: never under the median (two answers: the slower one)
        "latency_ms_p95": round(latencies[math.ceil(0.95 * len(latencies)) - 1], 1) if latencies else None,
    }


def evaluate(cases: list[AnswerCase], answer: Any, *, doc2dial: Doc2dialJudge | None = None,
             progress: bool = False) -> tuple[dict[str, Any], list[Judged]]:  # fmt: skip
    """Ask every case through ``answer`` (an entry point of :mod:`helpline.evaluation.answer_paths`)."""
    items: Any = cases
    if progress:
        tqdm = require("tqdm", "train").tqdm

        items = tqdm(cases, desc="answers", unit="question")
    results = []
    for case in items:
        start = time.perf_counter()
        served = answer(case)
        served.latency_ms = served.latency_ms or (time.perf_counter() - start) * 1000
        results.append(judge(case, served, doc2dial=doc2dial))
    return summarise(results), results
