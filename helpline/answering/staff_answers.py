"""Staff answers: a staff correction served at once when its question is asked again.

A correction saved in the review queue is what the help centre's staff say the answer is. `helpline improve`
teaches it to the model, but that takes a training run and a gate; until then the same question would get the
same wrong answer. So the gateway keeps each correction with the question it answers. When a question is close
enough to one of them, it serves the correction instead of generating. Closeness is the embedding similarity of
the two questions, at least ``min_similarity``. A follow-up too short to stand alone is compared with the message
before it.

The correction is served only while the help centre still backs it:

- it draws on a passage retrieved for the new question (word support of at least ``min_support``), so a question
  about something else that happens to be worded alike is not answered with it;
- it states no figure (amount, duration, count) that none of those passages states. If the article changed since
  the correction (14 days became 30), the correction is retired and the question takes the usual path.

A correction of a turn served to staff from internal passages is served to staff only. Its outcome is
``corrected``, cited with the passages it draws on. Dify's "annotation replies" are the same idea.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from helpline.answering.attribution import attribute, citations, support
from helpline.answering.decision import Served, Verdict
from helpline.answering.extractive import EmbedTexts
from helpline.platform.schemas import ScoredChunk
from helpline.platform.text import content_stems, unbacked_numbers

#: The share of a correction's words (and word pairs) one retrieved passage must account for, for it to be served.
MIN_SUPPORT = 0.4
#: A question with fewer content words than this is a follow-up ("and for Austria?"): the message before it says
#: what it is about, so the two are compared together.
FOLLOW_UP_WORDS = 4


@dataclass(frozen=True)
class StaffAnswer:
    """One staff correction and the question it answers."""

    response_id: str
    question: str  # the text compared (with the message before it for a follow-up; see :func:`match_text`)
    answer: str
    staff_only: bool = False  # corrected on a turn that drew on internal passages


#: What a source reports: (response_id, the staff answer it now holds, or None when it holds none any more).
Changes = Iterable[tuple[str, StaffAnswer | None]]
#: Reads the staff answers given since a cursor (None: all of them), and returns them with the next cursor.
Load = Callable[[float | None], tuple[Changes, float | None]]


def match_text(question: str, history: list[str]) -> str:
    """What a question is compared by: the question, after the message before it when it is a short follow-up."""
    if history and len(content_stems(question)) < FOLLOW_UP_WORDS:
        return f"{history[-1]} {question}"
    return question


class StaffAnswers:
    """The staff corrections a gateway serves again, kept up to date from ``load`` (see the module docstring).

    New corrections are read every ``refresh_s`` seconds (only what was given since the last read); everything is
    read again every ``reload_s`` seconds, so an erased or purged turn's correction goes too. Safe to call from
    several threads."""

    def __init__(
        self,
        embed: EmbedTexts,
        load: Load,
        *,
        min_similarity: float = 0.75,
        min_support: float = MIN_SUPPORT,
        refresh_s: float = 2.0,
        reload_s: float = 60.0,
    ) -> None:
        self.embed = embed
        self.load = load
        self.min_similarity = min_similarity
        self.min_support = min_support
        self.refresh_s = refresh_s
        self.reload_s = reload_s
        self._entries: dict[str, tuple[StaffAnswer, list[float]]] = {}
        self._index: tuple[list[StaffAnswer], np.ndarray] = ([], np.zeros((0, 0)))  # unit rows, in entry order
        self._cursor: float | None = None
        self._read_at = self._reloaded_at = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        self._refresh()
        return len(self._entries)

    def match(self, question: str, history: list[str], passages: list[ScoredChunk], *, role: str) -> Served | None:
        """The staff answer to serve for ``question`` (asked by ``role`` after ``history``, with ``passages``
        retrieved for it), or None to answer as usual."""
        self._refresh()
        answers, matrix = self._index
        if not answers or not passages or not question.strip():
            return None
        asked = np.asarray(self.embed([match_text(question, history)])[0], dtype=np.float32)
        similarities = matrix @ (asked / (np.linalg.norm(asked) or 1.0))
        for i in np.argsort(-similarities):
            entry, similarity = answers[i], float(similarities[i])
            if similarity < self.min_similarity:
                return None
            if role == "customer" and entry.staff_only:
                continue
            if backs(passages, entry.answer, min_support=self.min_support):
                verdict = Verdict(True, round(similarity, 4), f"staff correction {entry.response_id}")
                cited = citations(attribute(entry.answer, passages))
                why = f"a staff correction of a question asked alike (similarity {similarity:.2f})"
                return Served("corrected", entry.answer, cited, verdict=verdict, reason=why, claim=entry.answer)
        return None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < self.refresh_s:
            return
        with self._lock:
            if now - self._read_at < self.refresh_s:
                return
            full = now - self._reloaded_at >= self.reload_s
            changes, cursor = self.load(None if full else self._cursor)
            changes = list(changes)
            if not full and not changes:  # nothing new: the index stays as it is
                self._cursor, self._read_at = cursor, time.monotonic()
                return
            known = {e.question: v for e, v in self._entries.values()}  # a reload embeds only what is new
            entries = {} if full else dict(self._entries)
            new: list[StaffAnswer] = []
            for response_id, answer in changes:
                entries.pop(response_id, None)
                if answer is not None:
                    new.append(answer)
            unseen = list(dict.fromkeys(a.question for a in new if a.question not in known))
            if unseen:
                known.update(zip(unseen, (list(v) for v in self.embed(unseen)), strict=True))
            entries.update({a.response_id: (a, known[a.question]) for a in new})
            self._entries, self._cursor, self._read_at = entries, cursor, time.monotonic()
            self._index = _unit_rows(entries)
            if full:
                self._reloaded_at = self._read_at


def backs(passages: list[ScoredChunk], answer: str, *, min_support: float = MIN_SUPPORT) -> bool:
    """Do ``passages`` back the staff ``answer``: one accounts for at least ``min_support`` of its words, and every
    figure it states is stated by one of them? (Else it is not served: the help centre no longer says it.)"""
    texts = [p.chunk.text for p in passages]
    best = max((support(answer, text) for text in texts), default=0.0)
    return best >= min_support and not unbacked_numbers(answer, texts)


def _unit_rows(entries: dict[str, tuple[StaffAnswer, list[float]]]) -> tuple[list[StaffAnswer], np.ndarray]:
    """The answers and their question vectors as unit rows of one matrix (a question is compared with all at once)."""
    if not entries:
        return [], np.zeros((0, 0), dtype=np.float32)
    answers = [a for a, _ in entries.values()]
    matrix = np.asarray([v for _, v in entries.values()], dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return answers, matrix / np.where(norms == 0, 1.0, norms)
