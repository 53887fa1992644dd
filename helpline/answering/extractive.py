"""The extractive fallback: the passage's own sentences that answer the question, quoted.

When a generated answer is not supported by its passages, the customer should still get the
answer the help centre has. The reader splits the retrieved passages into units (sentences and
list items), scores each against the question (embedding similarity and the share of the question's
words it contains, rarer words counting more) and quotes the best one, with the list it introduces
or belongs to when it is a step of a procedure. Below ``min_score`` it quotes nothing, and the
handoff stays for questions no passage answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from helpline.platform.schemas import ScoredChunk
from helpline.platform.text import content_stems

EmbedTexts = Callable[[list[str]], list[list[float]]]

_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(*A-Z0-9€$])")
_TABLE_RULE = re.compile(r"\|?[\s:|-]+\|?")
_MARKUP = re.compile(r"\*\*|__|`|^#+\s*", re.MULTILINE)


@dataclass
class Unit:
    """One sentence or list item of a passage."""

    text: str
    passage: int  # index into the passages
    position: int  # order inside the passage
    list_item: bool = False
    intro: bool = False  # ends with ':' (introduces the list that follows)


@dataclass
class Quote:
    """The passage text the fallback serves, and how well it matched the question."""

    text: str
    passages: list[ScoredChunk]  # the ones quoted, in retrieval order
    score: float
    dense: float
    lexical: float


def plain(text: str) -> str:
    """Markdown emphasis, code ticks and heading marks removed; spaces collapsed."""
    return " ".join(_MARKUP.sub("", text).split())


def split_units(passage: str, index: int = 0) -> list[Unit]:
    """The passage as sentences and list items, in order (headings dropped)."""
    units: list[Unit] = []
    for raw in passage.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or _TABLE_RULE.fullmatch(line):
            continue
        if line.startswith("|"):  # a table row: its cells, as one unit ("UK returns: you pay the postage")
            cells = [plain(c) for c in line.strip("|").split("|") if c.strip()]
            units.append(Unit(": ".join(cells), index, len(units), list_item=True))
            continue
        if _LIST_ITEM.match(line):
            text = plain(_LIST_ITEM.sub("", line))
            units.append(Unit(text, index, len(units), list_item=True, intro=text.endswith(":")))
            continue
        for sentence in _SENTENCE_END.split(line):
            text = plain(sentence)
            if text:
                units.append(Unit(text, index, len(units), intro=text.endswith(":")))
    return units


def _cosine(a: list[float], b: list[float]) -> float:
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(x * x for x in b)) or 1.0
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


@dataclass
class ExtractiveReader:
    """Picks and quotes the passage text that answers a question.

    ``embed`` embeds texts (the knowledge base's embedder); without it only the lexical score counts.
    The score is ``dense_weight`` × cosine + (1 − ``dense_weight``) × the IDF-weighted share of the
    question's content words found in the unit (and its section title).
    """

    embed: EmbedTexts | None = None
    min_score: float = 0.45
    dense_weight: float = 0.6
    window: int = 3
    max_list_items: int = 6
    max_words: int = 90

    def units(self, passages: list[ScoredChunk]) -> list[Unit]:
        return [u for i, p in enumerate(passages) for u in split_units(p.chunk.text, i)]

    def best(self, question: str, passages: list[ScoredChunk]) -> Quote | None:
        """The quote for ``question``: the best-matching run of units and the next best one that does
        not overlap it (an answer often sits beside the sentence that names its topic), in passage
        order; None when the best run is under ``min_score``."""
        ranked = self.rank(question, passages)
        if not ranked or ranked[0][1] < self.min_score:
            return None
        first, score, dense, lexical = ranked[0]
        units = self.units(passages)

        def doc(run: list[Unit]) -> str:
            return passages[run[0].passage].chunk.doc_id

        picked = [first]
        taken = {(u.passage, u.position) for u in self._span(first, units)}
        for run, *_ in ranked[1:]:
            span = self._span(run, units)
            if doc(run) == doc(first) and not taken & {(u.passage, u.position) for u in span}:
                picked.append(run)
                break
        picked.sort(key=lambda r: (r[0].passage, r[0].position))
        parts = [self._span(r, units) for r in picked]
        return Quote(
            text=self._join([u for part in parts for u in part]),
            passages=[passages[i] for i in dict.fromkeys(r[0].passage for r in picked)],
            score=score,
            dense=dense,
            lexical=lexical,
        )

    def windows(self, passages: list[ScoredChunk]) -> list[list[Unit]]:
        """Runs of up to ``window`` consecutive units of one passage; a question ("Forgot your
        password?") only echoes what the customer asked, so no run starts with one or holds one."""
        units = [u for u in self.units(passages) if not u.text.endswith("?")]
        out = []
        for i, u in enumerate(units):
            if len(u.text.split()) < 3:
                continue
            run = [u]
            for v in units[i + 1 : i + self.window]:
                if v.passage != u.passage or v.position != run[-1].position + 1 or (v.list_item != u.list_item):
                    break
                run.append(v)
            out.append(run)
        return out

    def rank(self, question: str, passages: list[ScoredChunk]) -> list[tuple[list[Unit], float, float, float]]:
        """(window, score, dense, lexical), best first; ties keep retrieval order."""
        runs = self.windows(passages)
        if not runs or not question.strip():
            return []
        sections = [passages[r[0].passage].chunk.section or passages[r[0].passage].chunk.title for r in runs]
        texts = [" ".join(u.text for u in r) for r in runs]
        lexical = self._lexical(question, [f"{s} {t}" for s, t in zip(sections, texts)])
        if self.embed is not None:
            vectors = self.embed([question, *[f"{s}: {t}" for s, t in zip(sections, texts)]])
            dense = [max(0.0, _cosine(vectors[0], v)) for v in vectors[1:]]
            w = self.dense_weight
        else:
            dense, w = [0.0] * len(runs), 0.0
        scored = [(r, w * d + (1 - w) * lx, d, lx) for r, d, lx in zip(runs, dense, lexical)]
        return sorted(scored, key=lambda s: -s[1])

    @staticmethod
    def _lexical(question: str, texts: list[str]) -> list[float]:
        asked = set(content_stems(question))
        if not asked:
            return [0.0] * len(texts)
        bags = [set(content_stems(t)) for t in texts]
        n = len(bags)
        idf = {w: math.log(1 + n / (1 + sum(w in b for b in bags))) for w in asked}
        total = sum(idf.values()) or 1.0
        return [sum(idf[w] for w in asked if w in b) / total for b in bags]

    def _span(self, window: list[Unit], units: list[Unit]) -> list[Unit]:
        """A window of list items brings its whole list (and the line that introduces it); a window
        that ends with an intro brings the list it introduces."""
        same = [u for u in units if u.passage == window[0].passage]
        at = next(i for i, u in enumerate(same) if u.position == window[0].position)
        end = at + len(window)
        start = at
        if window[0].list_item:
            while start > 0 and same[start - 1].list_item:
                start -= 1
            if start > 0 and same[start - 1].intro:
                start -= 1
        if window[-1].intro or window[0].list_item:
            while end < len(same) and same[end].list_item and end - start <= self.max_list_items:
                end += 1
        return same[start:end]

    def _join(self, parts: list[Unit]) -> str:
        lines, words = [], 0
        for u in parts:
            words += len(u.text.split())
            if lines and words > self.max_words:
                break
            lines.append(f"- {u.text}" if u.list_item else u.text)
        return "\n".join(lines)
