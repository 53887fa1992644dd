"""Plain-text helpers shared by the groundedness features and citation attribution (no dependencies)."""

from __future__ import annotations

import re

WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "me",
        "him",
        "her",
        "us",
        "them",
        "my",
        "your",
        "his",
        "our",
        "their",
        "what",
        "which",
        "who",
        "whom",
        "when",
        "where",
        "why",
        "how",
        "not",
        "no",
        "yes",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "will",
        "would",
        "can",
        "could",
        "should",
        "may",
        "might",
        "must",
        "also",
        "so",
        "than",
        "then",
        "there",
        "here",
        "very",
        "just",
        "about",
        "into",
        "over",
        "after",
        "before",
        "up",
        "down",
        "out",
        "too",
        "only",
        "own",
        "same",
        "such",
        "more",
        "most",
        "other",
        "some",
        "any",
        "all",
        "both",
        "each",
    ]
)


def stems(text: str) -> list[str]:
    """5-letter prefixes of the text's words, lower-cased: a crude stemmer, so plurals and tenses match."""
    return [w.lower()[:5] for w in WORD.findall(text)]


def content_stems(text: str) -> list[str]:
    """The stems of the text's words that are not stopwords, in order."""
    return [w.lower()[:5] for w in WORD.findall(text) if w.lower() not in STOPWORDS]


_NOT_FACT_CHAR = re.compile(r"[^0-9a-z€$%]+")


def normalise(text: str) -> str:
    """Lower case, every character but letters, digits, €, $ and % a space, spaces collapsed: how an
    expected phrase is compared with an answer (the answers evaluator and the loop's held-out cases)."""
    return " ".join(_NOT_FACT_CHAR.sub(" ", text.lower()).split())


def contains(text: str, phrase: str) -> bool:
    """Does ``text`` contain ``phrase`` as whole words (after :func:`normalise`)?"""
    return f" {normalise(phrase)} " in f" {normalise(text)} "


_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*")
_LIST_MARKER = re.compile(r"(?:^|(?<=\s))\d{1,2}[.)](?=\s)", re.MULTILINE)  # "2. Open My Orders"


def numbers(text: str) -> set[str]:
    """The numbers a text states ("€4.95" → "4.95", "1,000" → "1000", "14:00" → "14", "00"), for telling whether
    one text states a figure that another does not. A list marker ("2. Open My Orders") is not a number stated."""
    text = _LIST_MARKER.sub(" ", text)
    return {n.replace(",", "") if re.fullmatch(r"\d{1,3}(?:,\d{3})+", n) else n for n in _NUMBER.findall(text)}


def unbacked_numbers(text: str, sources: list[str]) -> list[str]:
    """The numbers ``text`` states that none of ``sources`` states, in order of appearance."""
    backed = set().union(*(numbers(s) for s in sources)) if sources else set()
    return sorted(numbers(text) - backed, key=text.find)
