"""The detector's scoring logic (sentences, passages, threshold) with a stand-in for the network."""

from __future__ import annotations

import re

import pytest

from helpline.evaluation.hallucination.detector import (
    Detector,
    DetectorConfig,
    hypothesis,
    lexical_features,
    split_sentences,
)


def _fake_logits(pairs: list[tuple[str, str]], **_: object) -> list[float]:
    """+4 (hallucinated) when the answer part has a word missing from the passage, else -4."""
    out = []
    for passage, hyp in pairs:
        answer = hyp.split("\nA: ", 1)[-1]
        words = set(re.findall(r"[a-z0-9]+", answer.lower()))
        out.append(4.0 if words - set(re.findall(r"[a-z0-9]+", passage.lower())) else -4.0)
    return out


@pytest.fixture
def detector() -> Detector:
    det = Detector(model=None, tokenizer=None, config=DetectorConfig(threshold=0.5, mode="both"))
    det.logits = _fake_logits  # type: ignore[method-assign]
    return det


PASSAGES = ["Electronics can be returned within 14 days of delivery.", "Clothing can be returned within 30 days."]


def test_supported_answer_scores_low_and_unsupported_high(detector: Detector) -> None:
    assert detector.score("Electronics can be returned within 14 days.", PASSAGES) < 0.1
    assert detector.score("Electronics can be returned within 60 days.", PASSAGES) > 0.9


def test_a_sentence_is_supported_by_any_passage(detector: Detector) -> None:
    # Each sentence is supported by a different passage: the answer is grounded sentence by sentence.
    verdict = detector.verdict(
        "Electronics can be returned within 14 days. Clothing can be returned within 30 days.", PASSAGES
    )
    assert [s.passage for s in verdict.sentences] == [0, 1]
    assert all(s.score < 0.1 for s in verdict.sentences)


def test_one_invented_sentence_flags_the_answer_and_is_named(detector: Detector) -> None:
    verdict = detector.verdict("Electronics can be returned within 14 days. Shipping to Mars is free.", PASSAGES)
    assert verdict.hallucinated
    bad = max(verdict.sentences, key=lambda s: s.score)
    assert bad.sentence == "Shipping to Mars is free."


def test_threshold_decides(detector: Detector) -> None:
    answer = "Electronics can be returned within 60 days."
    assert detector.verdict(answer, PASSAGES).hallucinated
    assert not detector.verdict(answer, PASSAGES, threshold=0.999).hallucinated


def test_combiner_weights_the_lexical_features(detector: Detector) -> None:
    # Ignore the network, rely only on unsupported words: weight 0 on the logit.
    detector.config.combiner = [0.0, 10.0, 0.0, 0.0, -5.0]
    assert detector.score("Electronics within 14 days.", PASSAGES) < 0.05
    assert detector.score("Mars Venus Jupiter.", PASSAGES) > 0.95


def test_lexical_features_count_what_the_sources_lack() -> None:
    share, names, _ = lexical_features(
        "Delhi is the head office.", "The head office is in Mumbai since 1990.", "Where?"
    )
    assert names == 2.0  # Mumbai, 1990
    assert 0.3 < share < 1.0
    assert lexical_features("a b", "Delhi", "Is it Delhi?")[:2] == [0.0, 0.0]


def test_sentence_split_and_hypothesis_format() -> None:
    assert split_sentences("Yes. Open Account > Orders. Then pick Return items.\n- Pack it well") == [
        "Yes. Open Account > Orders.",
        "Then pick Return items.",
        "Pack it well",
    ]
    assert hypothesis("Delhi", None) == "Delhi"
    assert hypothesis("Delhi", "Where is it?") == "Q: Where is it?\nA: Delhi"
