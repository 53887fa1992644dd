"""Held-out staff corrections as an answer set that `helpline eval answers --questions heldout.yaml` scores as
served (the question-file format of ``evaluation/answers.py``: question, doc_id, expect, role, history; the
full correction is kept as ``reference``).

A served answer is correct there when it contains one of the case's ``expect`` phrases, so the phrases are taken
from the correction conservatively, to keep a wrong answer from passing:

- its key facts first: amounts, percentages, durations ("14 days"), quoted labels ("Cancel order"), menu paths
  ("Account > Orders"), counts ("2 gift cards");
- else its runs of two or three content words (between stopwords and punctuation), those with a word the
  question does not have;
- never a phrase the question already holds (an echo proves nothing), one the draft it corrects holds (that
  draft would pass), or one with personal data in it (the scrubber would change it).

A correction none of that yields cannot be scored; it is not held out (see ``mix.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from helpline.platform.pii import scrub
from helpline.platform.text import STOPWORDS, contains, normalise
from helpline.training.loop.collect import Collected

MAX_PHRASES = 4
_FACTS = (
    re.compile(r"[€$£]\s?\d+(?:[.,]\d+)?"),
    re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:%|€|(?:EUR|USD|euros?|dollars?|percent)\b)", re.IGNORECASE),
    re.compile(
        r"\b\d+(?:\s?[–-]\s?\d+)?\s+(?:(?:business|working|calendar)\s+)?(?:minutes?|hours?|days?|weeks?|months?|years?)\b",
        re.IGNORECASE,
    ),
    re.compile(r"\"([^\"\n]{2,40})\"|“([^”\n]{2,40})”"),
    re.compile(r"\b[A-Z][\w-]*(?: [A-Z][\w-]*)*(?: > [A-Z][\w-]*(?: [A-Z][\w-]*)*)+"),
    # a count of things: "2 gift cards", "three parcels" (a number, at most one word, then a plural)
    re.compile(
        r"\b(?:\d+|two|three|four|five|six|seven|eight|nine|ten|twelve)\s+(?:[a-z][\w-]*\s+)?[a-z][\w-]*s\b",
        re.IGNORECASE,
    ),
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_HEADER = """\
# Held-out staff corrections: questions the loop did not train on, with phrases a correct answer contains.
# Written by `helpline improve` (helpline/training/loop/heldout.py). Score a model on them as served:
#   helpline eval answers --questions heldout.yaml --model MODEL --json
"""


def expect_phrases(answer: str, *, question: str, rejected: str | None = None) -> list[str]:
    """The phrases a correct answer to ``question`` contains, taken from the reference ``answer`` (the module
    docstring says how); empty when none can be taken safely."""

    def usable(phrase: str) -> bool:
        return (
            bool(normalise(phrase))
            and scrub(phrase)[0] == phrase
            and not contains(question, phrase)
            and not (rejected and contains(rejected, phrase))
        )

    facts = [m.group(m.lastindex or 0).strip() for pattern in _FACTS for m in pattern.finditer(answer)]
    phrases = _distinct([f for f in facts if usable(f)])
    if not phrases:
        asked = {w.lower() for w in _WORD.findall(question)}
        runs = [run[:3] for run in _content_runs(answer) if any(w.lower() not in asked for w in run[:3])]
        phrases = _distinct([p for p in (" ".join(run) for run in runs) if usable(p)])
    return phrases[:MAX_PHRASES]


def heldout_case(item: Collected, *, raw: Collected) -> dict[str, Any] | None:
    """The answer-set entry of a held-out correction: ``item`` scrubbed, ``raw`` as collected (the phrases come
    from it, less any with personal data). None when no phrase can be taken."""
    expect = expect_phrases(raw.chosen, question=raw.question, rejected=raw.rejected)
    if not expect:
        return None
    return {
        "id": item.response_id,
        "question": item.question,
        "doc_id": item.doc_ids[0],
        "expect": expect,
        "role": item.role,
        "history": item.history,
        "reference": item.chosen,
    }


def write_heldout(path: Path, cases: list[dict[str, Any]]) -> str:
    """Write the answer set (a YAML list, empty when nothing is held out); returns the text written."""
    text = _HEADER + yaml.safe_dump(cases, sort_keys=False, allow_unicode=True, width=120)
    path.write_text(text, encoding="utf-8")
    return text


def _content_runs(text: str) -> list[list[str]]:
    """Runs of two or more adjacent content words: broken by a stopword or by anything but spaces between words."""
    runs: list[list[str]] = [[]]
    end = 0
    for m in _WORD.finditer(text):
        stop = m.group().lower() in STOPWORDS
        if stop or text[end : m.start()].strip():
            runs.append([])
        if not stop:
            runs[-1].append(m.group())
        end = m.end()
    return [run for run in runs if len(run) >= 2]


def _distinct(phrases: list[str]) -> list[str]:
    """``phrases`` without those that read the same once normalised, in order."""
    seen: dict[str, str] = {}
    for p in phrases:
        seen.setdefault(normalise(p), p)
    return list(seen.values())


