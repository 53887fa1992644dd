"""Staff answers: a correction is served again to a question asked alike, only while the passages back it."""

from __future__ import annotations

from helpline.answering.staff_answers import StaffAnswer, StaffAnswers, match_text
from helpline.platform.schemas import Chunk, ScoredChunk
from helpline.testing import FakeEmbedder

RETURNS = "Items can be returned within 30 days. Print the label from your orders page."
SHIPPING = "Standard shipping costs 4.95 and takes 3 to 5 business days."
CORRECTION = "Items can be returned within 30 days: print the label from your orders page."


def passage(doc_id: str, text: str) -> ScoredChunk:
    return ScoredChunk(chunk=Chunk(chunk_id=f"{doc_id}-0", doc_id=doc_id, title=doc_id.title(), text=text), score=0.9)


class Source:
    """The corrections a gateway database would report, changed by the test between reads."""

    def __init__(self, *answers: StaffAnswer) -> None:
        self.answers = {a.response_id: a for a in answers}
        self.pending: list[tuple[str, StaffAnswer | None]] = []
        self.reads: list[float | None] = []

    def __call__(self, since: float | None):
        self.reads.append(since)
        if since is None:
            self.pending.clear()
            return list(self.answers.items()), 1.0
        changes, self.pending = self.pending, []
        return changes, since + 1

    def change(self, response_id: str, answer: StaffAnswer | None) -> None:
        if answer is None:
            self.answers.pop(response_id, None)
        else:
            self.answers[response_id] = answer
        self.pending.append((response_id, answer))


def memory(source: Source, **kwargs: float) -> StaffAnswers:
    return StaffAnswers(FakeEmbedder().embed_documents, source, refresh_s=0, **kwargs)


def returns_correction(**kwargs: bool) -> StaffAnswer:
    return StaffAnswer("r1", "how many days do I have to return an item", CORRECTION, **kwargs)


def test_a_question_asked_alike_is_served_the_correction_cited_with_the_passage_it_draws_on() -> None:
    staff = memory(Source(returns_correction()))
    served = staff.match("How many days do I have to return my item?", [], [passage("shipping", SHIPPING),
                         passage("returns", RETURNS)], role="customer")  # fmt: skip
    assert served is not None and served.outcome == "corrected"
    assert served.text == served.claim == CORRECTION
    assert [c.doc_id for c in served.citations] == ["returns"]
    assert served.verdict is not None and served.verdict.reason == "staff correction r1"


def test_a_different_question_is_answered_anew() -> None:
    staff = memory(Source(returns_correction()))
    assert staff.match("What does express shipping cost?", [], [passage("returns", RETURNS)], role="customer") is None


def test_a_correction_the_passages_no_longer_back_is_not_served() -> None:
    staff = memory(Source(returns_correction()))
    question = "How many days do I have to return an item?"
    changed = "Items can be returned within 60 days. Print the label from your orders page."  # the article changed
    assert staff.match(question, [], [passage("returns", changed)], role="customer") is None
    assert staff.match(question, [], [passage("shipping", SHIPPING)], role="customer") is None  # about something else
    assert staff.match(question, [], [], role="customer") is None  # nothing retrieved


def test_a_correction_of_a_turn_that_drew_on_internal_passages_is_served_to_staff_only() -> None:
    staff = memory(Source(returns_correction(staff_only=True)))
    question, passages = "How many days do I have to return an item?", [passage("returns", RETURNS)]
    assert staff.match(question, [], passages, role="customer") is None
    assert staff.match(question, [], passages, role="staff") is not None


def test_new_and_withdrawn_corrections_are_read_as_they_come_and_a_reload_drops_erased_ones() -> None:
    source = Source()
    staff = memory(source, reload_s=3600)
    question, passages = "How many days do I have to return an item?", [passage("returns", RETURNS)]
    assert staff.match(question, [], passages, role="customer") is None
    source.change("r1", returns_correction())
    assert staff.match(question, [], passages, role="customer") is not None
    assert source.reads[0] is None and source.reads[-1] is not None  # one full read, then only what is new
    source.change("r1", None)  # the turn was rated again without a correction
    assert staff.match(question, [], passages, role="customer") is None and len(staff) == 0
    source.answers["r2"] = returns_correction()  # appears without being reported as a change (a full read sees it)
    assert len(staff) == 0
    staff.reload_s = 0
    assert len(staff) == 1


def test_a_reload_embeds_only_questions_it_has_not_seen() -> None:
    embedder = FakeEmbedder()
    staff = StaffAnswers(embedder.embed_documents, Source(returns_correction()), refresh_s=0, reload_s=0)
    assert len(staff) == 1 and len(staff) == 1
    assert embedder.calls == [["how many days do I have to return an item"]]


def test_a_short_follow_up_is_compared_with_the_message_before_it() -> None:
    assert match_text("And for shoes?", ["How many days do I have to return an item?"]) == (
        "How many days do I have to return an item? And for shoes?"
    )
    assert match_text("How many days do I have to return an item?", ["Hello"]) == (
        "How many days do I have to return an item?"
    )
