"""Remove personal data from text before it reaches a log line or an exported training file."""

from __future__ import annotations

import re

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[EMAIL]"),
    # Card numbers before phone numbers: both are digit runs, cards are the longer ones.
    (re.compile(r"\b(?:\d[ -]?){13,19}\b"), "[CARD]"),
    (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b"), "[IBAN]"),
    (re.compile(r"(?<![\w])\+?\d[\d ()./-]{7,}\d\b"), "[PHONE]"),
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "[SSN]"),
]


def redact(text: str) -> str:
    """``text`` with e-mail addresses, card and phone numbers, IBANs and SSNs replaced by tags."""
    for pattern, tag in _PATTERNS:
        text = pattern.sub(tag, text)
    return text
