"""Each evaluator's pass and fail case, on hand-written outputs."""

from __future__ import annotations

import pytest

from helpline.evaluation.regression.cases import Expectations
from helpline.evaluation.regression.evaluators import (
    Abstains,
    Contains,
    JsonSchema,
    MustCite,
    NotContains,
    Output,
    Regex,
    RougeL,
    Similarity,
    Structure,
    Tone,
    cosine,
    evaluators_for,
)
from helpline.testing import FakeEmbedder

GOOD = Output("Electronics can be returned within 14 days of delivery.", citations=["returns-window"])


@pytest.mark.parametrize(
    ("evaluator", "passing", "failing"),
    [
        (Contains([["14 days", "fourteen days"], "delivery"]), GOOD, Output("Within 30 days.")),
        (NotContains(["30 days"]), GOOD, Output("You have 30 days.")),
        (Regex([r"\b14\b"]), GOOD, Output("two weeks")),
        (MustCite(["returns-window"]), GOOD, Output("14 days", citations=["shipping"])),
        (Abstains(True), Output("I'm sorry, I don't know the answer to that."), GOOD),
        (Abstains(False), GOOD, Output("whatever", abstained=True)),
        (Structure(numbered_steps=True), Output("Do this:\n1. Sign in.\n2. Open Orders."), GOOD),
        (Structure(max_words=5), Output("Yes, 14 days."), GOOD),
        (Structure(min_words=3, max_sentences=1), GOOD, Output("Yes. Sure. Fine then.")),
        (Tone(), GOOD, Output("Calm down, it is obviously your fault.")),
        (Tone(), GOOD, Output("WHY DIDN'T YOU READ THE PAGE!!")),
        (Tone(forbidden=["unfortunately"]), GOOD, Output("Unfortunately not.")),
    ],
)
def test_evaluator_passes_good_and_fails_bad(evaluator, passing: Output, failing: Output) -> None:
    ok, bad = evaluator.evaluate(passing), evaluator.evaluate(failing)
    assert ok.passed and ok.score == 1.0, ok.reason
    assert not bad.passed and bad.score < 1.0
    assert bad.reason and bad.reason != ok.reason


def test_contains_reason_names_the_missing_phrase() -> None:
    score = Contains(["14 days", "refund"]).evaluate(GOOD)
    assert score.score == 0.5
    assert "'refund'" in score.reason


def test_json_schema_checks_types_and_parse_errors() -> None:
    schema = {"type": "object", "required": ["order_id", "items"], "properties": {"items": {"type": "integer"}}}
    ev = JsonSchema(schema)
    assert ev.evaluate(Output('Here you go: {"order_id": "NW-1", "items": 3}')).passed
    wrong_type = ev.evaluate(Output('{"order_id": "NW-1", "items": "three"}'))
    assert not wrong_type.passed and "items" in wrong_type.reason
    assert "not JSON" in ev.evaluate(Output("order NW-1 has 3 items")).reason


def test_rouge_l_scores_overlap_with_reference() -> None:
    ev = RougeL("Electronics can be returned within 14 days.", threshold=0.5)
    assert ev.evaluate(GOOD).passed
    assert not ev.evaluate(Output("Our opening hours are 8 to 20.")).passed


def test_similarity_uses_the_embedder() -> None:
    ev = Similarity("returned within 14 days of delivery", FakeEmbedder(), threshold=0.5)
    assert ev.evaluate(GOOD).passed
    assert not ev.evaluate(Output("Opening hours are Monday to Friday.")).passed


def test_cosine_of_known_vectors() -> None:
    assert cosine([1, 0], [1, 0]) == 1.0
    assert cosine([1, 0], [0, 1]) == 0.0
    assert cosine([0, 0], [1, 1]) == 0.0


def test_evaluators_for_builds_one_per_expectation() -> None:
    expect = Expectations(must_contain=["a"], must_cite=["d"], reference="ref", must_abstain=False)
    names = [e.name for e in evaluators_for(expect, embedder=FakeEmbedder())]
    assert names == ["must_contain", "must_cite", "must_abstain", "rouge_l", "similarity"]
    assert "similarity" not in [e.name for e in evaluators_for(expect)]
