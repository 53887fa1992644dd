"""Measure retrieval on a test collection: recall@1/5/10, MRR@10 and nDCG@10 at document level.

The collection is indexed with the product's own chunking, embedder and knowledge base (a throwaway
Chroma collection), then every query is searched as a user's question would be; documents are ranked
by their best chunk. Metrics come from ranx.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from helpline.datasets.collections import Collection
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import ScoredChunk
from helpline.retrieval.embedders.base import Embedder
from helpline.retrieval.factory import scratch_knowledge_base
from helpline.retrieval.knowledge_base import KnowledgeBase, Mode, SearchOptions

METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
#: Chunks fetched per query so that ten distinct documents remain after grouping chunks by document.
CHUNKS_PER_QUERY = 200


@dataclass
class EvalResult:
    """Metrics of one mode on one collection."""

    dataset: str
    mode: str
    history: bool
    embedder: str
    queries: int
    documents: int
    chunks: int
    metrics: dict[str, float]
    index_s: float
    search_ms_median: float


def rank_documents(hits: list[ScoredChunk]) -> dict[str, float]:
    """Documents in the order of their best chunk, scored by descending rank (ties are impossible)."""
    ranked: dict[str, float] = {}
    for h in hits:
        if h.chunk.doc_id not in ranked:
            ranked[h.chunk.doc_id] = float(len(hits) - len(ranked))
    return ranked


def evaluate(
    kb: KnowledgeBase,
    collection: Collection,
    *,
    mode: Mode,
    history: bool,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], float]:
    """Search every query; returns (metrics, median search milliseconds)."""
    ranx = require("ranx", "eval")
    statistics = require("statistics", "eval")
    embed_all = kb.embedder.embed_documents
    # Embed every query text in batches first: with a caching embedder the searches then hit the cache.
    texts = [t for q in collection.queries for t in kb.query_texts(q.text, q.history if history else None)]
    if mode != "bm25":
        embed_all(sorted(set(texts)))
    run: dict[str, dict[str, float]] = {}
    timings = []
    for q in collection.queries:
        start = time.perf_counter()
        hits = kb.search(q.text, k=CHUNKS_PER_QUERY, role="staff", history=q.history if history else None, mode=mode)
        timings.append((time.perf_counter() - start) * 1000)
        ranked = rank_documents(hits)
        # Every metric stops at rank 10; shorter runs keep ranx's typed-dict conversion fast.
        run[q.qid] = dict(sorted(ranked.items(), key=lambda kv: -kv[1])[:10]) or {"__none__": 0.0}
        if progress:
            progress(1)
    qrels = ranx.Qrels({q.qid: q.relevant for q in collection.queries})
    scores = ranx.evaluate(qrels, ranx.Run(run), list(METRICS), make_comparable=True)
    return {m: round(float(scores[m]), 4) for m in METRICS}, statistics.median(timings)


def run_eval(
    collection: Collection,
    embedder: Embedder,
    *,
    modes: list[Mode],
    history: bool,
    chunk_size: int,
    chunk_overlap: int,
    options: SearchOptions,
) -> list[EvalResult]:
    """Index once, evaluate each mode."""
    with tempfile.TemporaryDirectory(prefix="helpline-eval-") as store_dir:
        start = time.perf_counter()
        kb = scratch_knowledge_base(
            store_dir, embedder, options=options, chunk_size=chunk_size, chunk_overlap=chunk_overlap, name="eval"
        )
        kb.sync(collection.documents)
        index_s = time.perf_counter() - start
        chunks = sum(len(r.chunk_ids) for r in kb.documents())
        results = []
        for mode in modes:
            metrics, median_ms = evaluate(kb, collection, mode=mode, history=history)
            results.append(
                EvalResult(
                    dataset=collection.name,
                    mode=mode,
                    history=history,
                    embedder=embedder.name,
                    queries=len(collection.queries),
                    documents=len(collection.documents),
                    chunks=chunks,
                    metrics=metrics,
                    index_s=round(index_s, 1),
                    search_ms_median=round(median_ms, 2),
                )
            )
        return results
