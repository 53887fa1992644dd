"""Search behaviour users notice: the right passage, never an internal one for a customer, follow-ups."""

from __future__ import annotations

import pytest

from helpline.platform.schemas import Document, ScoredChunk
from helpline.retrieval.knowledge_base import KnowledgeBase, SearchOptions
from helpline.testing import FakeEmbedder, InMemoryStore

DOCS = [
    Document(doc_id="returns", title="Returning an item", text="You can return any item within 30 days for a refund."),
    Document(
        doc_id="address",
        title="Change delivery address",
        text="To change the delivery address of an order, open the order page before it ships.",
    ),
    Document(doc_id="fees", title="Delivery fees", text="Standard delivery costs 4.95 euros; free above 50 euros."),
    Document(
        doc_id="fraud",
        title="Fraud review checklist",
        text="Staff only: refund fraud review checklist. Verify the refund address matches the card country.",
        access="internal",
    ),
]
MODES = ["bm25", "dense", "hybrid"]


@pytest.fixture
def kb() -> KnowledgeBase:
    kb = KnowledgeBase(store=InMemoryStore(), embedder=FakeEmbedder(), chunk_size=200, chunk_overlap=20)
    kb.sync(DOCS)
    return kb


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_finds_the_answering_document_first(kb: KnowledgeBase, mode: str) -> None:
    hits = kb.search("how do I return an item for a refund", k=3, mode=mode)  # type: ignore[arg-type]
    assert hits[0].chunk.doc_id == "returns"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("mode", MODES)
def test_customer_never_gets_internal_chunk_even_when_it_matches_best(kb: KnowledgeBase, mode: str) -> None:
    query = "fraud review checklist refund address card country"
    customer = kb.search(query, k=50, role="customer", mode=mode)  # type: ignore[arg-type]
    assert customer and all(h.chunk.access == "public" for h in customer)
    staff = kb.search(query, k=50, role="staff", mode=mode)  # type: ignore[arg-type]
    assert staff[0].chunk.doc_id == "fraud"


@pytest.mark.parametrize("mode", MODES)
def test_unknown_role_sees_public_only(kb: KnowledgeBase, mode: str) -> None:
    hits = kb.search("fraud review checklist", k=50, role="intruder", mode=mode)  # type: ignore[arg-type]
    assert all(h.chunk.access == "public" for h in hits)


@pytest.mark.parametrize("mode", MODES)
def test_follow_up_is_searched_with_the_conversation(kb: KnowledgeBase, mode: str) -> None:
    follow_up = "and what if it already shipped?"
    history = ["I need to change the delivery address of my order"]
    with_context = kb.search(follow_up, k=1, history=history, mode=mode)  # type: ignore[arg-type]
    assert with_context[0].chunk.doc_id == "address"


def test_only_the_last_turns_of_history_are_used(kb: KnowledgeBase) -> None:
    kb.options = SearchOptions(history_turns=2)
    assert kb.query_texts("and the fee?", ["turn one", "turn two", "turn three"]) == [
        "turn two\nturn three\nand the fee?"
    ]
    assert kb.query_texts("plain question", None) == ["plain question"]
    kb.options = SearchOptions(history_turns=2, question_alone=True)
    assert kb.query_texts("q", ["h", " "]) == ["h\nq", "q"]  # blank turns are dropped


def test_weighted_fusion_mode_also_filters_and_ranks(kb: KnowledgeBase) -> None:
    kb.options = SearchOptions(fusion="weighted")
    hits = kb.search("fraud review checklist refund", k=10, role="customer")
    assert hits and all(h.chunk.access == "public" for h in hits)


def test_query_with_no_known_words_returns_nothing_from_bm25(kb: KnowledgeBase) -> None:
    assert kb.search("zzzz qqqq", k=3, mode="bm25") == []
    assert kb.search("   ", k=3, mode="bm25") == []


def test_search_with_empty_knowledge_base_returns_nothing() -> None:
    kb = KnowledgeBase(store=InMemoryStore(), embedder=FakeEmbedder())
    for mode in MODES:
        assert kb.search("anything", k=3, mode=mode) == []  # type: ignore[arg-type]


class ReverseReranker:
    """Puts the fused list upside down, and records what it was asked."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def rerank(self, query: str, hits: list[ScoredChunk]) -> list[ScoredChunk]:
        self.queries.append(query)
        return list(reversed(hits))


def test_reranker_reorders_candidates_with_the_conversation_and_keeps_the_filter(kb: KnowledgeBase) -> None:
    plain = kb.search("refund fraud review", k=3)
    reranker = ReverseReranker()
    kb.reranker = reranker
    reranked = kb.search("refund fraud review", k=3, history=["my order"])
    assert reranker.queries == ["my order\nrefund fraud review"]
    assert reranked and reranked[0].chunk.chunk_id != plain[0].chunk.chunk_id
    assert all(h.chunk.access == "public" for h in reranked)


def test_customer_gets_public_answers_even_when_internal_chunks_crowd_the_nearest_ones() -> None:
    kb = KnowledgeBase(store=InMemoryStore(), embedder=FakeEmbedder(), options=SearchOptions(candidates=2))
    crowd = [Document(doc_id=f"staff-{n}", title="Refund", text="refund policy", access="internal") for n in range(10)]
    kb.sync([*crowd, Document(doc_id="public", title="Refunds", text="refund policy for customers")])
    for mode in MODES:
        hits = kb.search("refund policy", k=2, role="customer", mode=mode)  # type: ignore[arg-type]
        assert [h.chunk.doc_id for h in hits] == ["public"]
    assert len(kb.search("refund policy", k=2, role="staff", mode="dense")) == 2
