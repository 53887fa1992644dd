"""The detector's scoring logic (sentences, passages, threshold) with a stand-in for the network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpline.guard.detector import Detector, DetectorConfig, hypothesis, split_sentences
from helpline.guard.features import FEATURES, support_features


def _fake_logits(pairs: list[tuple[str, str]], **_: object) -> list[float]:
    """+4 (hallucinated) when the answer part has a word missing from the passage, else -4."""
    out = []
    for passage, hyp in pairs:
        answer = hyp.split("\nA: ", 1)[-1]
        words = set(re.findall(r"[a-z0-9]+", answer.lower()))
        out.append(4.0 if words - set(re.findall(r"[a-z0-9]+", passage.lower())) else -4.0)
    return out


def _head(coef: list[float], bias: float, inputs: list[str]) -> dict:
    n = len(coef)
    return {"inputs": inputs, "mean": [0.0] * n, "scale": [1.0] * n, "coef": coef, "bias": bias}


@pytest.fixture
def detector() -> Detector:
    """The network stands in for itself (fake logits); the head reads only its logit."""
    head = _head([0.0] * len(FEATURES) + [1.0], 0.0, ["features", "cross_encoder"])
    config = DetectorConfig(threshold=0.5, mode="both", heads={"rag": head})
    det = Detector(model=object(), tokenizer=None, config=config)
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


def test_features_only_head_needs_no_network() -> None:
    # Weight only "unsupported_share": a detector without a cross-encoder (train_cross_encoder=false).
    coef = [10.0] + [0.0] * (len(FEATURES) - 1)
    det = Detector(model=None, tokenizer=None, config=DetectorConfig(heads={"rag": _head(coef, -5.0, ["features"])}))
    assert det.score("Electronics within 14 days.", PASSAGES) < 0.05
    assert det.score("Mars Venus Jupiter.", PASSAGES) > 0.95


def test_support_features_count_what_the_sources_lack() -> None:
    answer = "The head office is in Mumbai since 1990."
    f = dict(zip(FEATURES, support_features("Delhi is the head office.", answer, "Where?")))
    assert f["unsupported_names_numbers"] == 2.0  # Mumbai, 1990
    assert 0.3 < f["unsupported_share"] < 1.0
    copied = dict(zip(FEATURES, support_features("Delhi is the capital.", "Delhi", "Is it Delhi?")))
    assert copied["unsupported_share"] == 0.0
    assert copied["exact_span"] == 1.0


def test_sentence_split_and_hypothesis_format() -> None:
    assert split_sentences("Yes. Open Account > Orders. Then pick Return items.\n- Pack it well") == [
        "Yes. Open Account > Orders.",
        "Then pick Return items.",
        "Pack it well",
    ]
    assert hypothesis("Delhi", None) == "Delhi"
    assert hypothesis("Delhi", "Where is it?") == "Q: Where is it?\nA: Delhi"


def test_init_registers_the_bundled_detector_once_and_it_judges_answers(tmp_path: Path, monkeypatch) -> None:
    from helpline.guard.selection import register_bundled_detector
    from helpline.platform.context import Context

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    ctx = Context.load()
    assert register_bundled_detector(ctx) and not register_bundled_detector(ctx)  # a registered one is kept
    record = ctx.registry.get_model("helpline-detector")
    assert record.kind == "detector" and record.metadata["bundled"] is True
    detector = Detector.load(record.path)
    passage = "You can use up to 2 gift cards on one order. Gift cards are valid for 3 years."
    supported = detector.verdict("You can use up to 2 gift cards on one order.", [passage])
    invented = detector.verdict("You can use 1000 gift cards and pay with bitcoin at our Berlin store.", [passage])
    assert not supported.hallucinated and invented.hallucinated


def test_a_chat_model_is_not_loaded_as_the_detector(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from helpline.guard.detector import registered_detector_path
    from helpline.guard.verifier import DetectorVerifier
    from helpline.platform.errors import ConfigError
    from helpline.platform.registry import Registry

    registry = Registry(tmp_path / "registry.sqlite")
    registry.register_model("smollm2", kind="base", path=tmp_path)
    registry.register_model("helpline-detector", kind="detector", path=tmp_path / "det")
    assert registered_detector_path(registry, "helpline-detector") == tmp_path / "det"
    with pytest.raises(ConfigError, match="not a hallucination detector"):
        DetectorVerifier.from_registry(registry, "smollm2")  # gateway.detector: smollm2 (a typo'd setting)
