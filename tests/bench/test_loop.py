"""`helpline bench loop`'s parts that need no model: the paraphrase set, what staff would write, the seeding rule."""

from __future__ import annotations

from pathlib import Path

from helpline.bench.loop import help_centre_correction, paired_cases, rate, seed
from helpline.evaluation.answers import AnswerCase, ServedAnswer, read_cases
from helpline.platform.text import contains
from helpline.retrieval import SAMPLE_KB


def test_every_answerable_customer_question_has_a_different_wording() -> None:
    customer = [c for c in read_cases(SAMPLE_KB / "QUESTIONS.yaml") if c.answerable and c.role == "customer"]
    pairs = paired_cases()
    assert len(pairs) == len(customer) >= 30  # the 30 corrections fit
    for case, again in pairs:
        assert again.question != case.question and again.expect == case.expect and again.doc_id == case.doc_id


def test_the_correction_is_the_articles_own_sentence_stating_the_fact() -> None:
    for case, _ in paired_cases():
        correction = help_centre_correction(case)
        assert correction is not None and any(contains(correction, p) for p in case.expect), case.question
        assert "---" not in correction and not correction.startswith("#")  # no front matter, no heading


def test_an_unknown_article_yields_no_correction(tmp_path: Path) -> None:
    case = AnswerCase(question="Q?", doc_id="no-such-article", expect=["x"])
    assert help_centre_correction(case, tmp_path) is None


def test_seeding_corrects_only_what_was_served_wrong_up_to_the_limit() -> None:
    pairs = paired_cases()[:5]
    right = {pairs[0][0].question}  # production answers the first right, the rest wrong

    def ask(case: AnswerCase) -> tuple[str, ServedAnswer]:
        text = help_centre_correction(case) if case.question in right else "I don't know."
        outcome = "fallback" if case.question in right else "handoff"
        return f"r-{case.id}", ServedAnswer(text=text or "", outcome=outcome, citations=[], latency_ms=1.0)

    corrected: list[tuple[str, str]] = []
    seeded, before = seed(ask, lambda rid, text: corrected.append((rid, text)), pairs, limit=3)

    assert before == {"asked": 5, "correct_before": 1}
    assert [s.case.question for s in seeded] == [p[0].question for p in pairs[1:4]]
    assert [rid for rid, _ in corrected] == [s.response_id for s in seeded]
    assert all(text == help_centre_correction(s.case) for (_, text), s in zip(corrected, seeded, strict=True))


def test_rates_count_only_the_ids_asked_for() -> None:
    fixed = {"a": True, "b": False, "c": True}
    assert (rate(fixed, ["a", "b"]), rate(fixed, ["c"]), rate(fixed, [])) == (0.5, 1.0, None)
