"""The phrases a held-out correction is scored by: specific enough that the draft it corrects does not pass,
never an echo of the question, never personal data."""

from __future__ import annotations

from helpline.training.loop.heldout import expect_phrases


def test_key_facts_of_the_correction_are_the_phrases() -> None:
    phrases = expect_phrases(
        'Refunds reach your card within 14 days; the fee is €4.95. Click "Start a return" under Account > Orders.',
        question="How long does a refund take?",
    )
    assert phrases == ["€4.95", "14 days", "Start a return", "Account > Orders"]


def test_a_count_of_things_is_a_fact() -> None:
    q = "How many gift cards can I use on one order?"
    phrases = expect_phrases("You can combine up to 2 gift cards on one order.", question=q,
                             rejected="You can put a gift card on one order with 1000+ gift cards.")  # fmt: skip
    assert phrases == ["2 gift cards"]
    assert expect_phrases("Up to two gift cards.", question=q, rejected="Up to ten gift cards.") == ["two gift cards"]


def test_a_fact_the_wrong_draft_also_states_is_not_a_phrase() -> None:
    phrases = expect_phrases(
        "Refunds take 14 days and cost €4.95.", question="How long do refunds take?", rejected="About 14 days, free."
    )
    assert phrases == ["€4.95"]


def test_a_fact_the_question_already_holds_proves_nothing() -> None:
    question = "Is shipping free over 50 euros?"
    assert expect_phrases("Yes, shipping is free over 50 euros.", question=question) == []
    assert expect_phrases("Yes, shipping is free over 50 euros within 3 days.", question=question) == ["3 days"]


def test_without_facts_the_content_word_runs_the_question_lacks_are_the_phrases() -> None:
    phrases = expect_phrases(
        "Open the order page and press the resend confirmation button.",
        question="I never got my order email. What now?",
    )
    assert phrases == ["order page", "resend confirmation button"]


def test_personal_data_is_never_a_phrase() -> None:
    assert expect_phrases("Write to jane.doe@example.com.", question="Who do I write to?") == []


def test_a_correction_with_nothing_specific_yields_no_phrase() -> None:
    assert expect_phrases("Yes, you can do that.", question="Can I do that?") == []
