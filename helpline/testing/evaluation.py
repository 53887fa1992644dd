"""Fakes for evaluation tests: a scripted responder and a word-overlap verifier."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from helpline.evaluation.regression.cases import Case
from helpline.evaluation.regression.evaluators import Output


@dataclass
class FakeResponder:
    """Answers each case from a script (case id -> answer), else with ``default``; records questions."""

    answers: dict[str, str] = field(default_factory=dict)
    default: str = "I don't know."
    citations: list[str] = field(default_factory=list)
    name: str = "fake-responder"
    asked: list[str] = field(default_factory=list)

    def respond(self, case: Case) -> tuple[Output, list[str]]:
        self.asked.append(case.question)
        text = self.answers.get(case.id, self.default)
        return Output(text, list(self.citations)), [d.text for d in case.context]


class OverlapVerifier:
    """Hallucination score = share of answer words missing from every passage (deterministic)."""

    def score(self, answer: str, passages: list[str], question: str | None = None) -> float:
        words = set(re.findall(r"[a-z0-9]+", answer.lower()))
        known = set(re.findall(r"[a-z0-9]+", " ".join(passages).lower()))
        return len(words - known) / len(words) if words else 0.0
