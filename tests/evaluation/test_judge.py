"""LLM-as-judge over a stand-in OpenAI-compatible judge: rubric scores of served answers only, verdicts read
strictly (an unreadable reply is counted, never guessed), cached by prompt, and the judge's agreement with the
rule-based check reported as Cohen's kappa."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.evaluation.answers import AnswerCase, Judged
from helpline.evaluation.judge.judge import Judge, cohen_kappa, judge_results, parse_verdict
from helpline.platform.errors import ConfigError

pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")


def fake_judge_app():
    """Scores correctness 9 when the answer holds the reference's first word, else 2; helpfulness 7; voice replies
    with no number at all (unparsed)."""
    app = fastapi.FastAPI()
    app.state.asked = 0

    @app.post("/v1/chat/completions")
    async def chat(request: fastapi.Request) -> dict:
        app.state.asked += 1
        prompt = (await request.json())["messages"][-1]["content"]
        if prompt.startswith("Brand voice"):
            content = "I would rather not say."
        elif "Reference" in prompt:
            reference = prompt.split("Reference (what a correct answer says): ")[1].split("\n")[0]
            answer = prompt.split("Answer to grade: ")[1].split("\n")[0]
            score = 9 if reference.split()[0].lower() in answer.lower() else 2
            content = f'Sure. {{"score": {score}, "reason": "compared"}}'
        else:
            content = '{"score": 7, "reason": "on topic"}'
        message = {"role": "assistant", "content": content}
        return {"id": "j", "object": "chat.completion", "created": 0, "model": "judge",
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}  # fmt: skip

    return app


def result(case: AnswerCase, text: str, outcome: str, correct: bool) -> Judged:
    return Judged(id=case.id, question=case.question, role="customer", doc_id=case.doc_id, outcome=outcome, text=text,
                  citations=[], correct=correct, wrong_served=outcome != "handoff" and not correct, leaked=[],
                  latency_ms=1.0)  # fmt: skip


def test_verdicts_are_read_strictly() -> None:
    assert parse_verdict('ok {"score": 8, "reason": "fine"}').score == 8
    assert parse_verdict("I give it 4 out of 10").score == 4
    assert parse_verdict('{"score": 42}').score is None  # out of range and no 0-10 number elsewhere
    assert parse_verdict("no idea").score is None


def test_cohens_kappa() -> None:
    assert cohen_kappa([True, True, False, False], [True, False, False, False]) == 0.5
    assert cohen_kappa([True, False], [True, False]) == 1.0
    assert cohen_kappa([True, True], [True, True]) is None  # chance agreement is total: kappa says nothing


def test_served_answers_are_judged_by_rubric_cached_and_compared_with_the_rules(tmp_path: Path) -> None:
    from helpline.testing.serving import serve_in_thread

    cases = [AnswerCase(id="a", question="How many gift cards per order?", doc_id="gift", expect=["two gift cards"]),
             AnswerCase(id="b", question="How long is the return window?", doc_id="returns", expect=["30 days"]),
             AnswerCase(id="c", question="Lost my code?", doc_id="login", expect=["backup code"]),
             AnswerCase(id="d", question="Do you sell cars?", doc_id=None)]  # fmt: skip
    results = [result(cases[0], "You can use two gift cards on one order.", "answered", True),
               result(cases[1], "Returns are accepted for a year.", "answered", False),
               result(cases[2], "", "handoff", False),  # handed off: nothing to judge
               result(cases[3], "", "handoff", True)]  # fmt: skip
    app = fake_judge_app()
    with serve_in_thread(app) as port:
        judge = Judge(base_url=f"http://127.0.0.1:{port}/v1", model="judge", cache_path=tmp_path / "cache.sqlite")
        report = judge_results(judge, cases, results)
        assert report["judged"] == 2 and app.state.asked == 6
        assert (report["correctness_mean"], report["helpfulness_mean"], report["voice_mean"]) == (5.5, 7.0, None)
        assert report["unparsed"] == 2  # the voice replies held no score
        assert report["agreement"] == {"with": "rule-based correctness", "pass_score": 6, "compared": 2, "rate": 1.0,
                                       "cohen_kappa": 1.0}  # fmt: skip
        assert results[0].detail["judge"] == {"correctness": 9, "helpfulness": 7, "voice": None}

        again = judge_results(judge, cases, results)
        assert app.state.asked == 6 and again["cached_verdicts"] == 6  # nothing asked twice

    with pytest.raises(ConfigError, match="JUDGE_KEY_THAT_IS_NOT_SET is not set"):
        Judge(base_url="http://127.0.0.1:1/v1", model="m", cache_path=tmp_path / "c.sqlite",
              api_key_env="JUDGE_KEY_THAT_IS_NOT_SET")  # fmt: skip


def test_the_gate_counts_a_judge_only_when_it_agrees_with_the_rules() -> None:
    from helpline.evaluation.gate import Thresholds, compare_answers, load_gate_config

    def summary(correctness: float, kappa: float | None) -> dict:
        judge = {"correctness_mean": correctness, "helpfulness_mean": 6.0, "voice_mean": None,
                 "agreement": {"cohen_kappa": kappa}}  # fmt: skip
        return {"wrong_served_rate": 0.1, "judge": judge}

    trusted = compare_answers(summary(5.0, 0.6), summary(7.0, 0.6), Thresholds())
    assert [(c.name, c.passed) for c in trusted] == [("answers: wrong served vs baseline", True),
                                                     ("answers: judge correctness vs baseline", False),
                                                     ("answers: judge helpfulness vs baseline", True)]  # fmt: skip
    untrusted = compare_answers(summary(5.0, 0.05), summary(7.0, 0.05), Thresholds())
    assert [c.name for c in untrusted] == ["answers: wrong served vs baseline"]  # reported, not gating
    assert load_gate_config().judge is None  # the shipped gate asks no judge


def test_a_regression_suite_is_judged_against_its_references_and_compared_with_its_pass_fail(tmp_path: Path) -> None:
    from helpline.evaluation.judge.judge import judge_suite
    from helpline.evaluation.regression.cases import Case
    from helpline.evaluation.regression.evaluators import Output
    from helpline.evaluation.regression.runner import run_suite
    from helpline.testing.serving import serve_in_thread

    cases = [Case(id="gift", question="How many gift cards per order?", expect={"must_contain": [["two", "2"]]}),
             Case(id="ret", question="Return window?", expect={"reference": "Thirty days from delivery.",
                                                                "must_contain": ["30 days"]}),
             Case(id="car", question="Do you sell cars?", expect={"must_abstain": True}),
             Case(id="tone", question="Hi", expect={"tone": {}})]  # fmt: skip
    answers = {"gift": Output("You can use two gift cards on one order.", []),
               "ret": Output("Returns are accepted for a year.", []),
               "car": Output("I don't know.", [], abstained=True),
               "tone": Output("Hello! How can I help?", [])}  # fmt: skip

    class Canned:
        name = "canned"

        def respond(self, case: Case) -> tuple[Output, list[str]]:
            return answers[case.id], []

    result = run_suite("support", cases, Canned())
    app = fake_judge_app()
    with serve_in_thread(app) as port:
        judge = Judge(base_url=f"http://127.0.0.1:{port}/v1", model="judge", cache_path=tmp_path / "cache.sqlite")
        result.judge = judge_suite(judge, cases, result)
    # abstained, and nothing to judge against: not asked; the reference answer wins over the phrases
    assert result.judge["judged"] == 2 and app.state.asked == 6
    by_id = {c.id: c for c in result.cases}
    assert by_id["gift"].judge == {"correctness": 9, "helpfulness": 7, "voice": None}
    assert by_id["ret"].judge["correctness"] == 2  # "Thirty" (the reference's first word) is not in the answer
    assert by_id["car"].judge is None and by_id["tone"].judge is None
    assert result.judge["agreement"]["rate"] == 1.0 and result.judge["agreement"]["cohen_kappa"] == 1.0
    assert result.summary()["judge"] == result.judge and result.to_dict()["cases"][0]["judge"]["correctness"] == 9
