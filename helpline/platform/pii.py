"""The one PII scrubber: what leaves a log line, an exported conversation or a training file.

Every kind of personal data becomes a typed placeholder in the Bitext style (``{{Email}}``,
``{{Phone Number}}``, ``{{Order Number}}``), never a bracketed tag like ``[EMAIL]``. Training data
already speaks that language (the Bitext dataset writes ``{{Order Number}}``, the evaluation's
``PlaceholdersKept`` check looks for ``{{...}}``), and conversations exported from the gateway feed
``helpline data prepare``: one scheme keeps the model learning to carry placeholders through rather
than inventing values, whichever path a conversation took.

Kinds and placeholders:

============== ============================== =========================================
kind           placeholder                    matches
============== ============================== =========================================
email          ``{{Email}}``                  ``name@host.tld``
iban           ``{{IBAN}}``                   ``DE89 3704 0044 0532 0130 00``
address        ``{{Street Address}}``         ``221B Baker Street``, ``42 Elm St.``
order_id       ``{{Order Number}}``           the id after "order", "invoice", "tracking"...
account_id     ``{{Account Number}}``         the id after "account", "customer", "member"...
ssn            ``{{Social Security Number}}`` ``123-45-6789``
card           ``{{Credit Card Number}}``     13–19 digits (Luhn-valid ones first)
phone          ``{{Phone Number}}``           7–15 digits grouped, then any longer digit run
============== ============================== =========================================

Rules run in this fixed order, the most specific first: emails before anything with digits; IBANs
before cards and phones, which would take their digit groups; ids after a keyword like "order"
before card numbers, whose Luhn check passes one random digit run in ten. The last two rules are
the wide nets of the former log redactor: any run of 13–19 digits, then any run of digits and
separators nine characters or longer. They cost some false positives (``12/03/2024`` becomes a
phone number) and are kept on purpose: a log line or a training file never holds a long number.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


_DATE = re.compile(r"(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}[./-]\d{1,2}[./-]\d{1,2})")


def _not_a_date(match: re.Match[str]) -> bool:
    """A date (12/03/2024, 2023-01-15) is not personal data, and support answers need their dates."""
    return _DATE.fullmatch(match.group(0).strip()) is None


def _is_phone(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 7 <= len(digits) <= 15 and _not_a_date(match)


_STREET = (
    r"street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|"
    r"square|sq|parkway|pkwy|highway|hwy|crescent|close|gardens"
)
_ID_WORDS = r"(?:number|no\.?|nr\.?|id|#|code|ref(?:erence)?)"
_ID = r"#?([A-Z]{0,4}-?\d[\w-]{3,})"
_CARD_DIGITS = r"\b\d(?:[ -]?\d){12,18}\b"


@dataclass(frozen=True)
class Rule:
    """One kind of PII: a pattern, the placeholder it becomes, an optional check on the match."""

    kind: str
    placeholder: str
    pattern: re.Pattern[str]
    check: Callable[[re.Match[str]], bool] | None = None
    group: int = 0  # the part of the match that is replaced


RULES: tuple[Rule, ...] = (
    Rule("email", "{{Email}}", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    Rule("iban", "{{IBAN}}", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")),
    Rule(
        "address",
        "{{Street Address}}",
        re.compile(rf"\b\d{{1,5}}[a-z]?(?:\s+[A-Z][\w'.-]*){{1,4}}\s+(?:{_STREET})\b\.?", re.IGNORECASE),
    ),
    Rule(
        "order_id",
        "{{Order Number}}",
        re.compile(
            rf"\b(?:order|purchase|invoice|tracking|shipment|parcel)s?(?:\s+{_ID_WORDS})?(?:\s+is)?[:\s]+{_ID}",
            re.IGNORECASE,
        ),
        group=1,
    ),
    Rule(
        "account_id",
        "{{Account Number}}",
        re.compile(
            rf"\b(?:account|acct|customer|member|client)(?:\s+{_ID_WORDS})?(?:\s+is)?[:\s]+{_ID}", re.IGNORECASE
        ),
        group=1,
    ),
    Rule("ssn", "{{Social Security Number}}", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    Rule("card", "{{Credit Card Number}}", re.compile(_CARD_DIGITS), _is_card),
    Rule(
        "phone",
        "{{Phone Number}}",
        re.compile(
            r"(?<![\w-])(?:(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,6}){1,4}"
            r"|\+?0\d{8,11})(?![\w-])"  # grouped numbers, or a bare national number starting with 0
        ),
        _is_phone,
    ),
    # The wide nets (see the module docstring): whatever long number the precise rules let through.
    Rule("card", "{{Credit Card Number}}", re.compile(_CARD_DIGITS)),
    Rule("phone", "{{Phone Number}}", re.compile(r"(?<![\w])\+?\d[\d ()./-]{7,}\d\b"), _not_a_date),
)

PLACEHOLDERS: dict[str, str] = {rule.kind: rule.placeholder for rule in RULES}


def _apply(rule: Rule, text: str, counts: Counter[str]) -> str:
    def replace(m: re.Match[str]) -> str:
        if rule.check is not None and not rule.check(m):
            return m.group(0)
        counts[rule.kind] += 1
        if rule.group == 0:
            return rule.placeholder
        start, end = m.span(rule.group)
        whole = m.group(0)
        return whole[: start - m.start()] + rule.placeholder + whole[end - m.start() :]

    return rule.pattern.sub(replace, text)


def scrub(text: str) -> tuple[str, Counter[str]]:
    """Replace PII in ``text`` with typed placeholders; returns the text and counts per kind."""
    counts: Counter[str] = Counter()
    for rule in RULES:
        text = _apply(rule, text, counts)
    return text, counts


def scrub_messages(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], Counter[str]]:
    """Scrub the content of every turn of a conversation; other fields of a turn are kept."""
    total: Counter[str] = Counter()
    out = []
    for m in messages:
        clean, counts = scrub(m["content"])
        total.update(counts)
        out.append({**m, "content": clean})
    return out, total


def measure_recall(sample: list[dict]) -> dict:
    """Recall of the scrubber on a labelled sample: ``[{"text": ..., "pii"?: [{"kind", "value"}]}]``.

    An item counts as found when its value is gone from the scrubbed text and the placeholder of its
    kind appears. Items without ``pii`` are clean sentences; ``false_positives`` counts those the
    scrubber changed anyway.
    """
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    missed: list[str] = []
    false_positives = 0
    for item in sample:
        clean, _ = scrub(item["text"])
        if not item.get("pii"):
            false_positives += clean != item["text"]
            continue
        for pii in item["pii"]:
            total[pii["kind"]] += 1
            if pii["value"] not in clean and PLACEHOLDERS[pii["kind"]] in clean:
                found[pii["kind"]] += 1
            else:
                missed.append(f"{pii['kind']}: {pii['value']}")
    return {
        "recall": round(sum(found.values()) / max(1, sum(total.values())), 3),
        "per_kind": {k: round(found[k] / total[k], 3) for k in sorted(total)},
        "labelled_items": sum(total.values()),
        "clean_sentences": sum(1 for item in sample if not item.get("pii")),
        "false_positives": false_positives,
        "missed": missed,
    }
