"""One search per question: the hits carry their dense and lexical scores, and abstention reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.answering.rag import relevance
from helpline.platform.context import Context
from helpline.platform.schemas import ChatMessage, Chunk, Document, ScoredChunk
from helpline.platform.settings import Settings
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.serving.factory import build_pipeline
from helpline.testing import FakeEmbedder, FakeGenerator, InMemoryStore

DOCS = [
    Document(doc_id="returns", title="Returning an item", text="You can return any item within 30 days for a refund."),
    Document(doc_id="fees", title="Delivery fees", text="Standard delivery costs 4.95 euros; free above 50 euros."),
    Document(doc_id="address", title="Change address", text="Open the order page to change the delivery address."),
]


class CountingEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return super().embed_query(text)


class CountingStore(InMemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def query(self, vector: list[float], *, k: int, where: dict | None = None) -> list[ScoredChunk]:
        self.queries += 1
        return super().query(vector, k=k, where=where)


@pytest.fixture
def counted(tmp_path: Path):  # type: ignore[no-untyped-def]
    embedder, store = CountingEmbedder(), CountingStore()
    kb = KnowledgeBase(store=store, embedder=embedder, chunk_size=200, chunk_overlap=20)
    kb.sync(DOCS)
    ctx = Context(Settings(workspace=tmp_path))
    assert ctx.settings.retrieval.mode == "hybrid"  # the default this is about
    pipeline = build_pipeline(ctx, generator=FakeGenerator(), kb=kb)
    embedder.queries = store.queries = 0
    return pipeline, embedder, store


def test_a_hybrid_question_is_embedded_once_and_queried_once(counted) -> None:  # type: ignore[no-untyped-def]
    pipeline, embedder, store = counted
    prepared = pipeline.prepare([ChatMessage(role="user", content="how do I return an item for a refund")])
    assert not prepared.abstained and prepared.passages[0].chunk.doc_id == "returns"
    assert (embedder.queries, store.queries) == (1, 1)


def test_a_follow_up_with_history_is_still_one_search(counted) -> None:  # type: ignore[no-untyped-def]
    pipeline, embedder, store = counted
    conversation = [
        ChatMessage(role="user", content="I want to return an item"),
        ChatMessage(role="assistant", content="You can return it within 30 days."),
        ChatMessage(role="user", content="and the refund?"),
    ]
    pipeline.prepare(conversation)
    assert (embedder.queries, store.queries) == (1, 1)


def test_hybrid_hits_carry_both_signals(counted) -> None:  # type: ignore[no-untyped-def]
    pipeline, _, _ = counted
    hits = pipeline.retrieve([ChatMessage(role="user", content="delivery fees above 50 euros")])
    top = hits[0]
    assert top.chunk.doc_id == "fees" and top.dense is not None and top.lexical is not None and top.lexical > 0
    assert -1.0 <= top.dense <= 1.0


def test_the_abstention_threshold_reads_the_dense_signal(counted) -> None:  # type: ignore[no-untyped-def]
    pipeline, _, _ = counted
    conversation = [ChatMessage(role="user", content="how do I return an item for a refund")]
    best = relevance(pipeline.retrieve(conversation), "dense")
    pipeline.min_score = best + 1e-6  # just above what the best passage scores: abstain
    assert pipeline.prepare(conversation).abstained
    pipeline.min_score = best - 1e-6
    assert not pipeline.prepare(conversation).abstained


def test_relevance_by_signal() -> None:
    chunk = Chunk(chunk_id="c", doc_id="d", title="", text="", content_hash="h")
    hits = [ScoredChunk(chunk=chunk, score=0.9, dense=0.2), ScoredChunk(chunk=chunk, score=0.5, dense=0.6)]
    assert relevance(hits, "score") == 0.9 and relevance(hits, "dense") == 0.6
    assert relevance([], "dense") == float("-inf")
    assert relevance([ScoredChunk(chunk=chunk, score=1.0)], "dense") == float("-inf")  # no dense signal
