"""The one decision about a generated answer: what the customer is served, and why.

Every path that answers a customer goes through :meth:`AnswerPolicy.decide`: the gateway (whole and
streamed), `helpline ask`, the regression runner, `eval rag` and `eval answers`. The outcomes:

- ``answered``: the generated answer, cut where it starts repeating itself, supported by the
  passages (the verifier) and drawing on the passage that best answers the question (the reader);
  cited with the passages it draws on.
- ``fallback``: the generated answer is not served (unsupported, off the point, or the model said it
  does not know), but a passage answers the question: its own words are quoted, with its citation.
- ``handoff``: no passage answers the question: "I don't know" and how to reach a person.

A question staff have already corrected is served their correction (``corrected``, ``staff_answers.py``) before any
of this; the pipeline decides that before generating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

from helpline.answering.abstention import declines
from helpline.answering.attribution import attribute, citations
from helpline.answering.extractive import ExtractiveReader, Quote
from helpline.platform.schemas import Citation, ScoredChunk
from helpline.platform.text import content_stems

Outcome = Literal["answered", "fallback", "handoff", "corrected"]

_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+(?=\S)")
_LIST_MARKER = re.compile(r"\d+[.)]")
_COMPLETE = re.compile(r"[.!?:)\"'*]\s*$")


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
    """Accepts every answer (a workspace without a detector, when ``gateway.detector`` is none)."""

    def verify(self, answer: str, passages: list[ScoredChunk]) -> Verdict:
        return Verdict(grounded=True, reason="not verified")


@dataclass
class Served:
    """What the customer receives for one turn."""

    outcome: Outcome
    text: str
    citations: list[Citation] = field(default_factory=list)
    verdict: Verdict | None = None
    #: The generated answer when it is not what was served (kept for the review queue).
    draft: str | None = None
    reason: str = ""
    #: What the served text claims, without the fallback's framing ("" for the handoff).
    claim: str = ""

    @property
    def abstained(self) -> bool:
        return self.outcome == "handoff"


def trim(text: str, *, cut: bool = False) -> str:
    """The answer up to where it starts repeating itself; ``cut`` (generation stopped at max_tokens)
    also drops an unfinished last sentence. Small models loop; the loop adds nothing true."""
    kept: list[str] = []
    seen: list[set[str]] = []
    looped = False
    for part in sentences(text):
        words = set(content_stems(part))
        if words and any(len(words & s) / len(words | s) >= 0.8 for s in seen):
            looped = True
            break
        kept.append(part.strip())
        if words:
            seen.append(words)
    if cut and not looped and len(kept) > 1 and not _COMPLETE.search(kept[-1]):
        kept.pop()
    return _rejoin(text, kept)


def repeats(text: str) -> bool:
    """Has the answer started repeating itself (so generating more cannot change what is served)?"""
    return trim(text) != _rejoin(text, sentences(text))


def sentences(text: str) -> list[str]:
    """The text's lines split into sentences; a list marker ("3.") stays with its item."""
    out: list[str] = []
    for line in text.strip().splitlines():
        merged: list[str] = []
        for piece in _SENTENCE_END.split(line.strip()):
            if merged and _LIST_MARKER.fullmatch(merged[-1]):
                merged[-1] += " " + piece
            elif piece:
                merged.append(piece)
        out += merged
    return out


def _rejoin(original: str, parts: list[str]) -> str:
    """``parts`` joined with the separators they had in ``original`` (lines stay lines)."""
    out, at = "", 0
    for part in parts:
        i = original.find(part, at)
        out += original[at:i] if out and i >= 0 else ""
        out += part
        at = i + len(part) if i >= 0 else at
    return out.strip()


@dataclass
class AnswerPolicy:
    """Turns (question, passages, generated draft) into what is served; see the module docstring."""

    verifier: Verifier = field(default_factory=NoVerifier)
    reader: ExtractiveReader | None = None
    handoff: str = "I'm sorry, I don't know the answer to that from our help centre."
    fallback: str = 'Our help centre says ("{title}"):\n{quote}'

    def handoff_only(self, reason: str) -> Served:
        return Served("handoff", self.handoff, reason=reason)

    def decide(self, question: str, passages: list[ScoredChunk], draft: str, *, cut: bool = False) -> Served:
        """What the customer gets for ``draft``, generated from ``passages`` for ``question``."""
        if not passages:
            return self.handoff_only("no passage is relevant enough")
        text = trim(draft, cut=cut)
        quote = self.reader.best(question, passages) if self.reader is not None else None
        verdict = None
        if not text.strip():
            why = "the model gave no answer"
        elif declines(text):
            why = "the model said it does not know"
        else:
            verdict = self.verifier.verify(text, passages)
            drawn = attribute(text, passages)
            if not verdict.grounded:
                why = f"unsupported by the passages: {verdict.reason}"
            elif self.reader is not None and quote is None:
                why = "no passage answers the question"
            elif quote is not None and not any(p in drawn for p in quote.passages):
                why = "it does not draw on the passage that answers the question"
            else:
                return Served("answered", text, citations(drawn), verdict=verdict, claim=text)
        if quote is not None:
            quoted = self.quote_text(quote)
            return Served("fallback", quoted, citations(quote.passages), verdict, draft, why, claim=quote.text)
        return Served("handoff", self.handoff, [], verdict, draft or None, why)

    def quote_text(self, quote: Quote) -> str:
        titles = " / ".join(dict.fromkeys(p.chunk.title for p in quote.passages))
        return self.fallback.format(title=titles, quote=quote.text).strip()
