"""Evaluators: each check is a small dataclass with one method, ``evaluate(output) -> Score``.

They read the assistant's :class:`Output` (text, cited doc_ids, whether it abstained) and return a
score in [0, 1], whether it passed, and a reason a person can act on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from helpline.answering.abstention import ABSTAIN_PATTERNS
from helpline.evaluation.regression.cases import Expectations, Phrase
from helpline.platform.lazy_imports import require

RUDE_PHRASES = (
    "stupid", "idiot", "dumb", "shut up", "calm down", "not my problem", "your fault", "obviously you",
    "as i already said", "whatever", "deal with it", "read the manual", "i don't care",
)  # fmt: skip
_ACRONYM_OK = {"FAQ", "VAT", "EU", "UK", "US", "CET", "PIN", "ID", "PDF", "SMS", "DHL", "UPS", "OK", "API", "URL"}


@dataclass
class Output:
    """What the assistant produced for one case."""

    text: str
    citations: list[str] = field(default_factory=list)
    abstained: bool = False


@dataclass
class Score:
    """One evaluator's judgement of one output."""

    name: str
    score: float
    passed: bool
    reason: str


class Embed(Protocol):
    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...


def _alternatives(phrase: Phrase) -> list[str]:
    return [phrase] if isinstance(phrase, str) else list(phrase)


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


@dataclass
class Contains:
    """Every phrase (or one of its alternatives) appears, case-insensitively."""

    phrases: Sequence[Phrase]
    name: str = "must_contain"

    def evaluate(self, out: Output) -> Score:
        text = out.text.lower()
        missing = [p for p in self.phrases if not any(a.lower() in text for a in _alternatives(p))]
        found = len(self.phrases) - len(missing)
        reason = "all present" if not missing else f"missing {', '.join(repr(_alternatives(m)[0]) for m in missing)}"
        return Score(self.name, found / len(self.phrases), not missing, reason)


@dataclass
class NotContains:
    """None of the phrases appears (case-insensitive)."""

    phrases: Sequence[str]
    name: str = "must_not_contain"

    def evaluate(self, out: Output) -> Score:
        text = out.text.lower()
        present = [p for p in self.phrases if p.lower() in text]
        reason = "none present" if not present else f"contains forbidden {', '.join(map(repr, present))}"
        return Score(self.name, 1.0 - len(present) / len(self.phrases), not present, reason)


@dataclass
class Regex:
    """Every pattern matches somewhere in the answer (case-insensitive)."""

    patterns: Sequence[str]
    name: str = "regex"

    def evaluate(self, out: Output) -> Score:
        failed = [p for p in self.patterns if not re.search(p, out.text, re.IGNORECASE)]
        reason = "all patterns match" if not failed else f"no match for {', '.join(map(repr, failed))}"
        return Score(self.name, 1.0 - len(failed) / len(self.patterns), not failed, reason)


@dataclass
class JsonSchema:
    """The answer (or the first JSON object in it) is JSON that validates against a schema."""

    schema: dict[str, Any]
    name: str = "json_schema"

    def evaluate(self, out: Output) -> Score:
        jsonschema = require("jsonschema", "eval")

        match = re.search(r"\{.*\}|\[.*\]", out.text, re.DOTALL)
        try:
            data = json.loads(match.group(0) if match else out.text)
        except json.JSONDecodeError as e:
            return Score(self.name, 0.0, False, f"not JSON: {e.msg} at char {e.pos}")
        errors = sorted(jsonschema.Draft202012Validator(self.schema).iter_errors(data), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(root)"
            return Score(self.name, 0.0, False, f"{len(errors)} schema error(s); first at {where}: {errors[0].message}")
        return Score(self.name, 1.0, True, "valid JSON under the schema")


@dataclass
class MustCite:
    """The answer cites each of these documents."""

    doc_ids: Sequence[str]
    name: str = "must_cite"

    def evaluate(self, out: Output) -> Score:
        missing = [d for d in self.doc_ids if d not in out.citations]
        cited = ", ".join(out.citations) or "nothing"
        reason = "cited" if not missing else f"did not cite {', '.join(missing)} (cited {cited})"
        return Score(self.name, 1.0 - len(missing) / len(self.doc_ids), not missing, reason)


def is_abstention(out: Output) -> bool:
    """Did the assistant decline to answer (pipeline abstention or an 'I don't know' reply)?"""
    return out.abstained or any(re.search(p, out.text, re.IGNORECASE) for p in ABSTAIN_PATTERNS)


@dataclass
class Abstains:
    """The assistant abstains (``expected=True``) or answers (``expected=False``)."""

    expected: bool
    name: str = "must_abstain"

    def evaluate(self, out: Output) -> Score:
        did = is_abstention(out)
        ok = did == self.expected
        reason = ("abstained" if did else "answered") + (
            "" if ok else f" but should have {'abstained' if self.expected else 'answered'}"
        )
        return Score(self.name, float(ok), ok, reason)


@dataclass
class Structure:
    """Length and shape limits."""

    min_words: int | None = None
    max_words: int | None = None
    numbered_steps: bool | None = None
    max_sentences: int | None = None
    name: str = "structure"

    def evaluate(self, out: Output) -> Score:
        words = len(out.text.split())
        sentences = len([s for s in re.split(r"(?<=[.!?])\s+", out.text.strip()) if s])
        has_steps = len(re.findall(r"(?m)^\s*\d+[.)]\s+\S", out.text)) >= 2
        problems = []
        if self.min_words is not None and words < self.min_words:
            problems.append(f"{words} words < {self.min_words}")
        if self.max_words is not None and words > self.max_words:
            problems.append(f"{words} words > {self.max_words}")
        if self.max_sentences is not None and sentences > self.max_sentences:
            problems.append(f"{sentences} sentences > {self.max_sentences}")
        if self.numbered_steps is not None and has_steps != self.numbered_steps:
            problems.append("no numbered steps" if self.numbered_steps else "unexpected numbered steps")
        checks = sum(x is not None for x in (self.min_words, self.max_words, self.numbered_steps, self.max_sentences))
        score = 1.0 - len(problems) / max(1, checks)
        return Score(self.name, score, not problems, "; ".join(problems) or f"{words} words, shape ok")


@dataclass
class Tone:
    """No rude or blaming phrases, no shouting, none of the extra forbidden phrases."""

    polite: bool = True
    no_shouting: bool = True
    forbidden: Sequence[str] = ()
    name: str = "tone"

    def evaluate(self, out: Output) -> Score:
        text = out.text.lower()
        problems = [f"says {p!r}" for p in self.forbidden if p.lower() in text]
        if self.polite:
            problems += [f"rude phrase {p!r}" for p in RUDE_PHRASES if re.search(rf"\b{re.escape(p)}\b", text)]
        if self.no_shouting:
            caps = [w for w in re.findall(r"\b[A-Z]{4,}\b", out.text) if w not in _ACRONYM_OK]
            if len(caps) >= 2 or "!!" in out.text:
                problems.append(f"shouting ({', '.join(caps[:3]) or '!!'})")
        return Score(self.name, 0.0 if problems else 1.0, not problems, "; ".join(problems) or "tone ok")


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 (longest common subsequence of stemmed tokens)."""
    rouge_scorer = require("rouge_score.rouge_scorer", "eval")

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return scorer.score(reference, candidate)["rougeL"].fmeasure


@dataclass
class RougeL:
    """ROUGE-L F1 against a reference answer."""

    reference: str
    threshold: float = 0.2
    name: str = "rouge_l"

    def evaluate(self, out: Output) -> Score:
        value = rouge_l(self.reference, out.text)
        return Score(self.name, value, value >= self.threshold, f"ROUGE-L {value:.3f} (pass ≥ {self.threshold})")


@dataclass
class Similarity:
    """Cosine similarity of the answer's and the reference's embeddings."""

    reference: str
    embedder: Embed
    threshold: float = 0.5
    name: str = "similarity"

    def evaluate(self, out: Output) -> Score:
        a, b = self.embedder.embed_documents([self.reference, out.text or " "])
        value = cosine(a, b)
        return Score(
            self.name, max(0.0, value), value >= self.threshold, f"cosine {value:.3f} (pass ≥ {self.threshold})"
        )


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0 for a zero vector."""
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0


Evaluator = Callable[[Output], Score]


def evaluators_for(expect: Expectations, *, embedder: Embed | None = None) -> list[Any]:
    """The evaluators a case's expectations ask for (similarity only when an embedder is given)."""
    out: list[Any] = []
    if expect.must_contain:
        out.append(Contains(expect.must_contain))
    if expect.must_not_contain:
        out.append(NotContains(expect.must_not_contain))
    if expect.regex:
        out.append(Regex(expect.regex))
    if expect.json_schema is not None:
        out.append(JsonSchema(expect.json_schema))
    if expect.must_cite:
        out.append(MustCite(expect.must_cite))
    if expect.must_abstain is not None:
        out.append(Abstains(expect.must_abstain))
    if expect.structure is not None:
        out.append(Structure(**expect.structure.model_dump()))
    if expect.tone is not None:
        out.append(Tone(**expect.tone.model_dump()))
    if expect.reference:
        out.append(RougeL(expect.reference, expect.min_rouge_l))
        if embedder is not None:
            out.append(Similarity(expect.reference, embedder, expect.min_similarity))
    return out
