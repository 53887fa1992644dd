"""LLM-as-judge: rubric scores of served answers from any OpenAI-compatible model (a local vLLM or a remote API).

Three rubrics (``rubrics.yaml``, versioned with the code): **correctness** against the reference (a question file's
``expect`` phrases, or doc2dial's agent reply), **helpfulness**, and **brand voice** against a voice rubric. Each is
one chat answered with ``{"score": 0-10, "reason": ...}``; a reply that is not such an object is read for its first
0-10 number, and otherwise counted as unparsed (never guessed). Verdicts are cached by (judge model, rubric text,
question, answer, reference) in a SQLite file, so a re-run asks only what is new.

How far to trust it: ``agreement`` compares the judge's correctness (score >= ``pass_score``) with the rule-based
check on the same answers, as Cohen's kappa and the raw agreement rate. A judge that agrees little with the rules
on the sample help centre should not gate anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpline.platform.errors import ConfigError, EngineError
from helpline.platform.files import read_yaml
from helpline.platform.lazy_imports import require

RUBRICS = Path(__file__).with_name("rubrics.yaml")
_SCORE = re.compile(r"\b(10|[0-9])\b")


@dataclass(frozen=True)
class Verdict:
    score: int | None  # 0-10; None: the reply held no score
    reason: str
    cached: bool = False


@dataclass
class Judge:
    """Scores answers by rubric with ``model`` at ``base_url`` (OpenAI-compatible). ``api_key_env`` names the
    variable holding its key (a local vLLM needs none)."""

    base_url: str
    model: str
    cache_path: Path
    api_key_env: str | None = None
    voice: str | None = None
    pass_score: int = 6
    timeout_s: float = 120.0
    rubrics: dict[str, Any] = field(
        default_factory=lambda: read_yaml(RUBRICS, what="judge rubrics", hint="reinstall helpline: a package file")
    )

    def __post_init__(self) -> None:
        openai = require("openai", "serve")
        key = "unused"
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise ConfigError(f"{self.api_key_env} is not set", hint="export the judge's API key in it")
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s, max_retries=1)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.cache_path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, score INTEGER, reason TEXT)")

    def score(self, rubric: str, *, question: str, answer: str, reference: str = "") -> Verdict:
        """One rubric's verdict on one answer (from the cache when this judge saw the same prompt before)."""
        prompt = self.rubrics["rubrics"][rubric].format(
            question=question, answer=answer, reference=reference or "(none)", voice=self.voice or self.rubrics["voice"]
        )
        key = hashlib.sha256(json.dumps([self.model, self.rubrics["system"], prompt]).encode()).hexdigest()
        with sqlite3.connect(self.cache_path) as db:
            row = db.execute("SELECT score, reason FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return Verdict(row[0], row[1], cached=True)
        try:
            reply = self._client.chat.completions.create(
                model=self.model, temperature=0.0, max_tokens=96,
                messages=[{"role": "system", "content": self.rubrics["system"]}, {"role": "user", "content": prompt}],
            )  # fmt: skip
        except Exception as e:  # the client's errors: connection, status, timeout
            raise EngineError(
                f"the judge at {self.base_url} failed ({type(e).__name__}: {e})",
                hint="check --judge-url and --judge-model (GET /v1/models lists the served names)",
            ) from e
        verdict = parse_verdict(reply.choices[0].message.content or "")
        with sqlite3.connect(self.cache_path) as db:
            db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", (key, verdict.score, verdict.reason))
        return verdict


def parse_verdict(text: str) -> Verdict:
    """``{"score": N, "reason": ...}``, else the first 0-10 number in the reply, else no score."""
    match = re.search(r"\{.*\}", text, flags=re.S)
    if match:
        try:
            obj = json.loads(match.group(0))
            score = int(obj["score"])
            if 0 <= score <= 10:
                return Verdict(score, str(obj.get("reason", ""))[:300])
        except (ValueError, KeyError, TypeError):
            pass
    number = _SCORE.search(text)
    return Verdict(int(number.group(1)) if number else None, text.strip()[:300])


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    """Cohen's kappa of two binary raters (None with fewer than two items or when chance agreement is total)."""
    if len(a) != len(b) or len(a) < 2:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    return None if expected == 1 else round((observed - expected) / (1 - expected), 4)


@dataclass
class Item:
    """One answer to judge: the question, the text served, the reference it is judged against, the rule-based
    check's verdict on it, and where the judge's scores go (a result's ``detail`` dict)."""

    question: str
    answer: str
    reference: str
    rule_correct: bool
    detail: dict[str, Any]


def judge_items(judge: Judge, items: list[Item]) -> dict[str, Any]:
    """Every rubric's verdict on every item; rubric means and the agreement of the judge's correctness with the
    rule-based check. Adds each item's scores to its ``detail["judge"]``."""
    judged, rule, llm, unparsed, cached = 0, [], [], 0, 0
    means: dict[str, list[int]] = {"correctness": [], "helpfulness": [], "voice": []}
    for item in items:
        verdicts = {name: judge.score(name, question=item.question, answer=item.answer, reference=item.reference)
                    for name in means}  # fmt: skip
        item.detail["judge"] = {name: v.score for name, v in verdicts.items()}
        judged += 1
        cached += sum(v.cached for v in verdicts.values())
        for name, v in verdicts.items():
            if v.score is None:
                unparsed += 1
            else:
                means[name].append(v.score)
        if verdicts["correctness"].score is not None:
            rule.append(item.rule_correct)
            llm.append(verdicts["correctness"].score >= judge.pass_score)
    agree = sum(x == y for x, y in zip(rule, llm, strict=True))
    return {
        "model": judge.model,
        "judged": judged,
        "unparsed": unparsed,
        "cached_verdicts": cached,
        **{f"{name}_mean": round(sum(v) / len(v), 2) if v else None for name, v in means.items()},
        "correct_rate": round(sum(llm) / len(llm), 4) if llm else None,
        "agreement": {"with": "rule-based correctness", "pass_score": judge.pass_score, "compared": len(rule),
                      "rate": round(agree / len(rule), 4) if rule else None, "cohen_kappa": cohen_kappa(rule, llm)},
    }  # fmt: skip


def judge_results(judge: Judge, cases: list[Any], results: list[Any]) -> dict[str, Any]:
    """``eval answers``: judge every served (not handed-off) answer to an answerable question against the case's
    reference (its ``expect`` phrases, or doc2dial's agent reply); the rules' verdict is the result's ``correct``."""
    by_id = {c.id: c for c in cases}
    items = [
        Item(by_id[r.id].question, r.text, by_id[r.id].reference or "; ".join(by_id[r.id].expect), bool(r.correct),
             r.detail)
        for r in results
        if r.doc_id is not None and r.outcome != "handoff"
    ]  # fmt: skip
    return judge_items(judge, items)


def suite_reference(expect: Any) -> str:
    """What a regression case's answer is judged against: its reference answer, else its required phrases."""
    if expect.reference:
        return expect.reference
    phrases = [p if isinstance(p, str) else " or ".join(p) for p in expect.must_contain]
    return "; ".join(phrases)


def judge_suite(judge: Judge, cases: list[Any], result: Any) -> dict[str, Any]:
    """``eval regression``: judge every case answered (not abstained) that has something to judge against (a
    reference or required phrases); the rules' verdict is the case's pass/fail over all its evaluators."""
    by_id = {c.id: c for c in cases}
    pairs = []
    for r in result.cases:
        reference = suite_reference(by_id[r.id].expect)
        if not r.abstained and reference:
            pairs.append((r, Item(r.question, r.answer, reference, r.passed, {})))
    report = judge_items(judge, [item for _, item in pairs])
    for r, item in pairs:
        r.judge = item.detail["judge"]
    return report
