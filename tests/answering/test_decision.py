"""The one answer decision: trimming a looping draft, the extractive reader, answered / fallback / handoff."""

from __future__ import annotations

from helpline.answering.decision import AnswerPolicy, Verdict, repeats, trim
from helpline.answering.extractive import ExtractiveReader, split_units
from helpline.platform.schemas import Chunk, ScoredChunk
from helpline.testing import FakeEmbedder

GIFT = (
    "1. At checkout, open **Gift card or voucher**.\n2. Enter the 16-character code and the PIN.\n"
    "You can use up to 2 gift cards on one order. Gift cards are valid for 3 years from the date of purchase."
)
SHIP = "Standard delivery costs €4.95 and takes 2-4 business days. Express delivery costs €9.95."
TABLE = "| Method | Cost to you |\n|---|---|\n| Drop-off at a carrier point | Free |\n| Home pickup | €5.95 |"


def _p(doc: str, text: str, score: float = 1.0, title: str = "") -> ScoredChunk:
    chunk = Chunk(chunk_id=f"{doc}#0", doc_id=doc, title=title or doc, text=text, section=title or doc)
    return ScoredChunk(chunk=chunk, score=score)


PASSAGES = [_p("gift-cards", GIFT, title="Gift cards"), _p("shipping", SHIP, 0.5, title="Delivery fees")]


class _Verifier:
    def __init__(self, grounded: bool) -> None:
        self.grounded, self.asked = grounded, []

    def verify(self, answer, passages):
        self.asked.append(answer)
        return Verdict(grounded=self.grounded, score=0.9 if self.grounded else 0.1, reason="fake")


def test_a_looping_draft_is_cut_where_it_starts_repeating() -> None:
    draft = "You can find it on the website.\n\nYou can also find it on the website.\n\nYou can also find it on"
    assert trim(draft) == "You can find it on the website."
    assert repeats(draft) and not repeats("One sentence. Another one, different.")


def test_an_unfinished_last_sentence_is_dropped_only_when_generation_was_cut() -> None:
    draft = "Open Orders and choose Return. Then print the"
    assert trim(draft, cut=True) == "Open Orders and choose Return."
    assert trim(draft) == draft
    steps = "1. Open the page.\n2. Click Return\n3. Print the label."
    assert trim(steps, cut=True) == steps  # a list marker stays with its item


def test_the_reader_quotes_the_sentence_that_answers_the_question() -> None:
    quote = ExtractiveReader(min_score=0.2).best("How many gift cards can I use on one order?", PASSAGES)
    assert quote is not None and "up to 2 gift cards" in quote.text
    assert [p.chunk.doc_id for p in quote.passages] == ["gift-cards"]
    assert "**" not in quote.text  # markdown emphasis is not shown to the customer


def test_the_reader_brings_a_whole_procedure_and_reads_tables() -> None:
    steps = ExtractiveReader(min_score=0.1).best("How do I enter the gift card code at checkout?", PASSAGES)
    assert steps is not None and "- At checkout, open Gift card or voucher." in steps.text
    assert "- Enter the 16-character code and the PIN." in steps.text
    units = [u.text for u in split_units(TABLE)]
    assert units == ["Method: Cost to you", "Drop-off at a carrier point: Free", "Home pickup: €5.95"]


def test_the_reader_quotes_nothing_below_its_threshold_and_skips_echoed_questions() -> None:
    assert ExtractiveReader(min_score=0.9).best("Do you sell bicycles?", PASSAGES) is None
    echo = [_p("pw", "Forgot your password? You can set a new one with the link we email you.")]
    quote = ExtractiveReader(min_score=0.0).best("Forgot your password?", echo)
    assert quote is not None and quote.text.startswith("You can set a new one")


def test_the_reader_ranks_with_embeddings_when_it_has_an_embedder() -> None:
    embedder = FakeEmbedder()
    reader = ExtractiveReader(embed=embedder.embed_documents, min_score=0.1)
    quote = reader.best("How much does standard delivery cost?", PASSAGES)
    assert quote is not None and "€4.95" in quote.text and quote.dense > 0


def test_a_supported_answer_on_the_point_is_answered_with_its_citations() -> None:
    policy = AnswerPolicy(verifier=_Verifier(True), reader=ExtractiveReader(min_score=0.2))
    served = policy.decide("How many gift cards can I use on one order?", PASSAGES, "You can use up to 2 gift cards.")
    assert served.outcome == "answered" and served.text == "You can use up to 2 gift cards."
    assert [c.doc_id for c in served.citations] == ["gift-cards"] and served.draft is None


def test_an_unsupported_answer_gives_way_to_the_quote_and_is_kept_as_the_draft() -> None:
    verifier = _Verifier(False)
    policy = AnswerPolicy(verifier=verifier, reader=ExtractiveReader(min_score=0.2), fallback="From {title}: {quote}")
    draft = "You can put 1000 gift cards on one order."
    served = policy.decide("How many gift cards can I use on one order?", PASSAGES, draft)
    assert served.outcome == "fallback" and served.text.startswith("From Gift cards: ")
    assert "up to 2 gift cards" in served.claim and served.draft == draft
    assert [c.doc_id for c in served.citations] == ["gift-cards"] and verifier.asked == [draft]


def test_a_supported_answer_that_misses_the_point_is_not_served() -> None:
    policy = AnswerPolicy(verifier=_Verifier(True), reader=ExtractiveReader(min_score=0.2))
    served = policy.decide("How many gift cards can I use on one order?", PASSAGES, "Express delivery costs €9.95.")
    assert served.outcome == "fallback" and "does not draw on" in served.reason


def test_nothing_to_quote_hands_off_and_so_does_a_declining_model_without_a_quote() -> None:
    policy = AnswerPolicy(verifier=_Verifier(False), reader=ExtractiveReader(min_score=0.99), handoff="Ask a person.")
    served = policy.decide("How many gift cards?", PASSAGES, "Some unsupported claim.")
    assert served.outcome == "handoff" and served.text == "Ask a person." and served.citations == []
    assert served.abstained and served.draft == "Some unsupported claim."
    declined = policy.decide("How many gift cards?", PASSAGES, "I'm sorry, I don't know.")
    assert declined.outcome == "handoff" and declined.verdict is None
    assert policy.decide("anything", [], "text").outcome == "handoff"


def test_without_a_reader_a_supported_answer_is_served_as_before() -> None:
    served = AnswerPolicy(verifier=_Verifier(True)).decide("q", PASSAGES, "Express delivery costs €9.95.")
    assert served.outcome == "answered" and [c.doc_id for c in served.citations] == ["shipping"]
