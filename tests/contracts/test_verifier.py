"""The Verifier contract (helpline/answering/decision.py).

What the answer policy and distillation's filter rely on from ``verify(answer, passages)``: a
``Verdict`` whose ``score`` (1 = fully supported) lies in [0, 1], whose ``grounded`` is a threshold on
that score (never a grounded answer scored below an ungrounded one), the same verdict for the same
input, and a reason to show in the review queue. A verifier that checks (``CheckingVerifierContract``)
also finds an answer copied from a passage supported, in whichever passage it is, and an answer with a
figure the passages do not contain unsupported, even when its other sentence is copied.

Runs against ``NoVerifier`` (the workspace without a detector) and the guard's ``DetectorVerifier``
with the detector shipped in the package (support features and logistic heads, pure Python, under a
second to load: default tier).
"""

from __future__ import annotations

import pytest

from helpline.answering.decision import NoVerifier, Verdict, Verifier
from helpline.guard.detector import Detector
from helpline.guard.selection import BUNDLED_DETECTOR
from helpline.guard.verifier import DetectorVerifier
from helpline.platform.schemas import Chunk, ScoredChunk

RETURNS = (
    "You can return most items within 30 days of delivery. Start a return from the Orders page and print "
    "the prepaid label. Refunds reach your card within 5 working days of the parcel arriving at our warehouse."
)
DELIVERY = "Standard delivery takes 3 to 5 working days and costs €4.95."
COPIED = "Refunds reach your card within 5 working days of the parcel arriving at our warehouse."
INVENTED = "Returns cost €4.99 and take 45 days to process."
HALF_INVENTED = "You can return most items within 30 days of delivery. We also refund shipping up to 25 euros."
ANSWERS = [COPIED, INVENTED, HALF_INVENTED, "You can return most items within 90 days of delivery."]


def passages(*texts: str) -> list[ScoredChunk]:
    """Retrieved passages, as the answer policy passes them."""
    return [
        ScoredChunk(chunk=Chunk(chunk_id=f"kb-{i}#0", doc_id=f"kb-{i}", title=f"Article {i}", text=t), score=0.8)
        for i, t in enumerate(texts)
    ]


class VerifierContract:
    """What every verifier must do; subclass and override the ``verifier`` fixture."""

    @pytest.fixture
    def verifier(self) -> Verifier:
        raise NotImplementedError("override the `verifier` fixture")

    def test_a_verdict_has_a_score_in_zero_to_one_and_a_reason(self, verifier: Verifier) -> None:
        for answer in ANSWERS:
            verdict = verifier.verify(answer, passages(RETURNS))
            assert isinstance(verdict, Verdict) and isinstance(verdict.grounded, bool)
            assert 0.0 <= verdict.score <= 1.0
            assert isinstance(verdict.reason, str) and verdict.reason

    def test_grounded_is_a_threshold_on_the_score(self, verifier: Verifier) -> None:
        verdicts = [verifier.verify(a, passages(DELIVERY, RETURNS)) for a in ANSWERS]
        grounded = [v.score for v in verdicts if v.grounded]
        ungrounded = [v.score for v in verdicts if not v.grounded]
        assert min(grounded, default=1.0) >= max(ungrounded, default=0.0)

    def test_the_same_answer_gets_the_same_verdict(self, verifier: Verifier) -> None:
        assert verifier.verify(HALF_INVENTED, passages(RETURNS)) == verifier.verify(HALF_INVENTED, passages(RETURNS))


class CheckingVerifierContract(VerifierContract):
    """What a verifier that checks answers (rather than accepting all) must also do."""

    def test_an_answer_copied_from_a_passage_is_supported(self, verifier: Verifier) -> None:
        verdict = verifier.verify(COPIED, passages(RETURNS))
        assert verdict.grounded and verdict.score > 0.5

    def test_an_answer_is_supported_by_whichever_passage_holds_it(self, verifier: Verifier) -> None:
        assert verifier.verify(COPIED, passages(DELIVERY, RETURNS)).grounded

    def test_an_answer_with_figures_not_in_the_passages_is_not_supported(self, verifier: Verifier) -> None:
        invented = verifier.verify(INVENTED, passages(RETURNS))
        assert not invented.grounded
        assert invented.score < verifier.verify(COPIED, passages(RETURNS)).score

    def test_one_invented_sentence_makes_the_whole_answer_unsupported(self, verifier: Verifier) -> None:
        assert not verifier.verify(HALF_INVENTED, passages(RETURNS)).grounded


class TestNoVerifier(VerifierContract):
    @pytest.fixture
    def verifier(self) -> Verifier:
        return NoVerifier()


def test_no_verifier_accepts_even_an_invented_answer() -> None:
    verdict = NoVerifier().verify(INVENTED, passages(RETURNS))
    assert verdict.grounded and verdict.score == 1.0


@pytest.fixture(scope="module")
def bundled_detector() -> Detector:
    """The detector `helpline init` registers as helpline-detector."""
    return Detector.load(BUNDLED_DETECTOR)


class TestBundledDetectorVerifier(CheckingVerifierContract):
    @pytest.fixture
    def verifier(self, bundled_detector: Detector) -> Verifier:
        return DetectorVerifier(bundled_detector)


def test_detector_verdict_is_grounded_exactly_when_its_hallucination_score_is_under_the_cutoff(
    bundled_detector: Detector,
) -> None:
    for cutoff in (None, 0.0, 0.5, 0.9):
        verifier = DetectorVerifier(bundled_detector, threshold=cutoff)
        for answer in ANSWERS:
            verdict = verifier.verify(answer, passages(RETURNS))
            assert verdict.grounded == (1.0 - verdict.score < verifier.cutoff()), (cutoff, answer)
    assert DetectorVerifier(bundled_detector).cutoff() == bundled_detector.threshold_for("rag")


def test_a_looser_detector_threshold_lets_a_wrong_figure_through(bundled_detector: Detector) -> None:
    """The setting's threshold is what decides: the same verdict score, a different decision."""
    wrong = "You can return most items within 90 days of delivery."
    strict = DetectorVerifier(bundled_detector).verify(wrong, passages(RETURNS))
    loose = DetectorVerifier(bundled_detector, threshold=0.9).verify(wrong, passages(RETURNS))
    assert not strict.grounded and loose.grounded and loose.score == strict.score
