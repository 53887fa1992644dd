"""Citations follow the answer: the retrieved passages it draws on."""

from __future__ import annotations

from helpline.answering.rag import attribute, citations, support
from helpline.platform.schemas import Chunk, ScoredChunk

RETURNS = "To return an item open your orders, choose Return, print the label and drop the parcel off within 30 days."
SHIPPING = "Standard shipping costs 4.95 and takes 3 to 5 business days. Express delivery costs 12.90."


def _passages(*texts: str) -> list[ScoredChunk]:
    return [
        ScoredChunk(chunk=Chunk(chunk_id=f"d{i}#0", doc_id=f"d{i}", title=f"doc {i}", text=t), score=1.0 - i / 10)
        for i, t in enumerate(texts)
    ]


def test_support_is_higher_for_the_passage_the_answer_copies() -> None:
    answer = "You can print the label from your orders and drop the parcel off within 30 days."
    assert support(answer, RETURNS) > 0.6
    assert support(answer, SHIPPING) < 0.2
    assert support("", RETURNS) == 0.0
    assert support("the and of", RETURNS) == 0.0  # stopwords only


def test_passages_the_answer_does_not_use_are_not_cited() -> None:
    passages = _passages(RETURNS, SHIPPING)  # retrieval put the returns page first
    cited = citations(passages, answer="Express delivery costs 12.90 and standard shipping 4.95.")
    assert [c.doc_id for c in cited] == ["d1"]


def test_without_evidence_every_passage_is_kept_in_retrieval_order() -> None:
    passages = _passages(RETURNS, SHIPPING)
    assert attribute("Sorry, I cannot help with that.", passages) == passages
    assert attribute("", passages) == passages
    assert [c.doc_id for c in citations(passages)] == ["d0", "d1"]  # no answer given: retrieval order


def test_passages_that_support_the_answer_about_as_well_are_kept_in_retrieval_order() -> None:
    both = "Choose Return in your orders, print the label; shipping costs 4.95."
    assert support(both, SHIPPING) > support(both, RETURNS) > 0.5 * support(both, SHIPPING)
    assert [p.chunk.doc_id for p in attribute(both, _passages(RETURNS, SHIPPING))] == ["d0", "d1"]
