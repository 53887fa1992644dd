"""`eval answers`: question files, correctness as served, the same answer through every entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.answering.extractive import ExtractiveReader
from helpline.evaluation.answer_paths import answerer
from helpline.evaluation.answers import AnswerCase, ServedAnswer, contains, evaluate, judge, read_cases, summarise
from helpline.evaluation.gate import Thresholds, compare_answers
from helpline.platform.errors import ConfigError
from helpline.retrieval import SAMPLE_KB, sample_questions
from helpline.testing import FakeGenerator
from helpline.testing.serving import make_gateway


def _served(text: str, outcome: str = "fallback") -> ServedAnswer:
    return ServedAnswer(text=text, outcome=outcome, citations=[], latency_ms=1.0)


def test_phrases_match_whole_words_whatever_the_punctuation_and_case() -> None:
    assert contains("Open **Account > Wallet** now", "account wallet")
    assert contains("Delivery costs €4.95.", "€4.95")
    assert not contains("up to 24 hours", "up to 2")


def test_correct_wrong_served_and_leaks_are_judged_on_what_was_served() -> None:
    case = AnswerCase(question="How many gift cards?", doc_id="gift", expect=["2 gift cards", "two gift cards"])
    assert judge(case, _served("You can use up to 2 gift cards.")).correct
    wrong = judge(case, _served("You can use 1000 gift cards.", "answered"))
    assert not wrong.correct and wrong.wrong_served
    handed = judge(case, _served("Ask a person.", "handoff"))
    assert not handed.correct and not handed.wrong_served  # honest, not wrong
    unanswerable = AnswerCase(question="Do you sell cars?", forbid=["€25"])
    assert judge(unanswerable, _served("Ask a person.", "handoff")).correct
    leak = judge(unanswerable, _served("Agents may grant €25.", "answered"))
    assert leak.wrong_served and leak.leaked == ["€25"]


def test_summary_rates_are_over_answerable_and_unanswerable_questions() -> None:
    answerable = AnswerCase(question="q1", doc_id="d", expect=["yes"])
    unanswerable = AnswerCase(question="q2")
    rows = [
        judge(answerable, _served("yes it is", "answered")),
        judge(answerable, _served("no", "fallback")),
        judge(answerable, _served("ask a person", "handoff")),
        judge(unanswerable, _served("ask a person", "handoff")),
    ]
    s = summarise(rows)
    assert (s["answerable"], s["unanswerable"]) == (3, 1)
    third = pytest.approx(1 / 3, abs=1e-4)
    assert s["correct_rate"] == third and s["wrong_served_rate"] == third and s["handoff_rate_answerable"] == third
    assert s["abstention_rate_unanswerable"] == 1.0
    assert s["outcomes"] == {"answered": 1, "fallback": 1, "handoff": 2}


def test_question_files_are_checked_row_by_row(tmp_path: Path) -> None:
    bad = tmp_path / "q.yaml"
    bad.write_text("- question: How many?\n  doc_id: gift\n")
    with pytest.raises(ConfigError, match="no expect phrases"):
        read_cases(bad)
    bad.write_text("- question: Hi\n  role: boss\n")
    with pytest.raises(ConfigError, match="question 1 is not valid"):
        read_cases(bad)
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"question": "Do you ship to Mars?", "doc_id": null}\n')
    assert [c.id for c in read_cases(jsonl)] == ["q1"]


def test_the_sample_question_set_covers_answerable_unanswerable_internal_and_staff_questions() -> None:
    cases = read_cases(SAMPLE_KB / "QUESTIONS.yaml")
    customer = [c for c in cases if c.answerable and c.role == "customer"]
    assert len(customer) >= 40 and all(c.expect for c in customer)
    assert sum(1 for c in cases if not c.answerable and not c.forbid) >= 15
    assert sum(1 for c in cases if c.forbid) >= 10
    assert any(c.role == "staff" for c in cases)
    assert sample_questions() == [c.question for c in customer]


def test_every_entry_point_serves_the_same_answers(tmp_path: Path) -> None:
    """`helpline ask` (the pipeline) and the gateway, whole and streamed, go through one decision."""
    gw = make_gateway(tmp_path)
    pipeline = gw.client.app.state.chat_service.pipeline
    pipeline.reader = ExtractiveReader(min_score=0.3)
    pipeline.generator = FakeGenerator(reply="Standard shipping costs 4.95 and takes 3 to 5 business days.")
    cases = [
        AnswerCase(question="How much does standard shipping cost?", doc_id="shipping", expect=["4.95"]),
        AnswerCase(question="How do I return an item and print the label?", doc_id="returns", expect=["label"]),
        AnswerCase(question="Do you sell bicycles on Mars?"),
        AnswerCase(question="What goodwill credit may staff grant?", forbid=["20 euros"]),
    ]
    served = {}
    for via in ("pipeline", "gateway", "stream"):
        with answerer(via, pipeline, gw.registry) as answer:  # type: ignore[arg-type]
            summary, rows = evaluate(cases, answer)
        served[via] = [(r.outcome, r.text, r.citations) for r in rows]
        assert summary["internal_leaks"] == 0
    assert served["pipeline"] == served["gateway"] == served["stream"]
    outcomes = [o for o, _, _ in served["pipeline"]]
    assert outcomes == ["answered", "fallback", "handoff", "handoff"]


def test_the_gate_fails_a_candidate_that_serves_more_wrong_answers() -> None:
    worse = compare_answers({"wrong_served_rate": 0.2}, {"wrong_served_rate": 0.1}, Thresholds())
    assert [c.passed for c in worse] == [False]
    same = compare_answers({"wrong_served_rate": 0.1}, {"wrong_served_rate": 0.1}, Thresholds())
    assert [c.passed for c in same] == [True]


def test_the_p95_latency_is_never_under_the_median() -> None:
    case = AnswerCase(question="Q?", doc_id=None)

    def judged(ms: float):
        return judge(case, ServedAnswer(text="I don't know.", outcome="handoff", citations=[], latency_ms=ms))

    two = summarise([judged(1000.0), judged(3000.0)])
    assert (two["latency_ms_p50"], two["latency_ms_p95"]) == (2000.0, 3000.0)
    many = summarise([judged(float(ms)) for ms in range(1, 101)])
    assert (many["latency_ms_p50"], many["latency_ms_p95"]) == (50.5, 95.0)
