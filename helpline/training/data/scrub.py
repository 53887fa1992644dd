"""PII scrubbing: emails, phone numbers, card numbers, street addresses, order and account ids.

Each match becomes a typed placeholder in the Bitext style (``{{Email}}``), so the model learns to
keep placeholders rather than invent values. Patterns run in a fixed order: the most specific
first (emails before phone numbers; ids after a keyword like "order" before card numbers, whose
Luhn check passes one random digit run in ten).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources

import yaml


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(match: re.Match) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _is_phone(match: re.Match) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 7 <= len(digits) <= 15


_STREET = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
    r"square|sq|parkway|pkwy|highway|hwy|crescent|close|gardens"
)
_ID_WORDS = r"(?:number|no\.?|nr\.?|id|#|code|ref(?:erence)?)"


@dataclass(frozen=True)
class Rule:
    """One kind of PII: a pattern, the placeholder it becomes, an optional check on the match."""

    kind: str
    placeholder: str
    pattern: re.Pattern
    check: object = None  # callable(match) -> bool
    group: int = 0  # the part of the match that is replaced


RULES: tuple[Rule, ...] = (
    Rule("email", "{{Email}}", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    Rule(
        "address",
        "{{Street Address}}",
        re.compile(rf"\b\d{{1,5}}[a-z]?(?:\s+[A-Z][\w'.-]*){{1,4}}\s+(?:{_STREET})\b\.?", re.IGNORECASE),
    ),
    Rule(
        "order_id",
        "{{Order Number}}",
        re.compile(
            rf"\b(?:order|purchase|invoice|tracking|shipment|parcel)s?(?:\s+{_ID_WORDS})?(?:\s+is)?[:\s]+#?"
            r"([A-Z]{0,4}-?\d[\w-]{3,})",
            re.IGNORECASE,
        ),
        group=1,
    ),
    Rule(
        "account_id",
        "{{Account Number}}",
        re.compile(
            rf"\b(?:account|acct|customer|member|client)(?:\s+{_ID_WORDS})?(?:\s+is)?[:\s]+#?([A-Z]{{0,4}}-?\d[\w-]{{3,}})",
            re.IGNORECASE,
        ),
        group=1,
    ),
    Rule("card", "{{Credit Card Number}}", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), _is_card),
    Rule(
        "phone",
        "{{Phone Number}}",
        re.compile(
            r"(?<![\w-])(?:(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,6}){1,4}"
            r"|\+?0\d{8,11})(?![\w-])"  # grouped numbers, or a bare national number starting with 0
        ),
        _is_phone,
    ),
)


def scrub(text: str) -> tuple[str, Counter]:
    """Replace PII in ``text`` with typed placeholders; returns the text and counts per kind."""
    counts: Counter = Counter()
    for rule in RULES:

        def replace(m: re.Match, rule: Rule = rule) -> str:
            if rule.check is not None and not rule.check(m):  # type: ignore[operator]
                return m.group(0)
            counts[rule.kind] += 1
            if rule.group == 0:
                return rule.placeholder
            start, end = m.span(rule.group)
            whole = m.group(0)
            return whole[: start - m.start()] + rule.placeholder + whole[end - m.start() :]

        text = rule.pattern.sub(replace, text)
    return text, counts


def scrub_messages(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], Counter]:
    """Scrub every turn of a conversation."""
    total: Counter = Counter()
    out = []
    for m in messages:
        clean, counts = scrub(m["content"])
        total.update(counts)
        out.append({"role": m["role"], "content": clean})
    return out, total


def measure_recall(sample: list[dict] | None = None) -> dict:
    """Recall of the scrubber on a labelled sample (the one shipped with the package by default).

    An item counts as found when its value is gone from the scrubbed text and the placeholder of its
    kind appears. ``false_positives`` counts clean sentences the scrubber changed anyway.
    """
    if sample is None:
        sample = yaml.safe_load(resources.files("helpline.training.data").joinpath("pii_sample.yaml").read_text())
    placeholder = {r.kind: r.placeholder for r in RULES}
    found: Counter = Counter()
    total: Counter = Counter()
    missed: list[str] = []
    false_positives = 0
    for item in sample:
        clean, _ = scrub(item["text"])
        if not item.get("pii"):
            false_positives += clean != item["text"]
            continue
        for pii in item["pii"]:
            total[pii["kind"]] += 1
            if pii["value"] not in clean and placeholder[pii["kind"]] in clean:
                found[pii["kind"]] += 1
            else:
                missed.append(f"{pii['kind']}: {pii['value']}")
    per_kind = {k: round(found[k] / total[k], 3) for k in sorted(total)}
    n_clean = sum(1 for i in sample if not i.get("pii"))
    return {
        "recall": round(sum(found.values()) / max(1, sum(total.values())), 3),
        "per_kind": per_kind,
        "labelled_items": sum(total.values()),
        "clean_sentences": n_clean,
        "false_positives": false_positives,
        "missed": missed,
    }
