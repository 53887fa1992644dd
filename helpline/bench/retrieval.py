"""`helpline bench retrieval`: ingest throughput per embedder backend, query latency at scale, peak memory.

Scale is synthesised: the sample knowledge base's real chunks (really embedded) plus generated chunks of
words drawn from it, whose dense vectors are random unit vectors (embedding 100k chunks on a shared
CPU would take hours and would not change search cost, which depends on counts and dimensions).
Queries are the sample knowledge base's real questions, embedded for real on every search.
"""

from __future__ import annotations

import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable

from helpline.answering.rag import relevance
from helpline.datasets.collections import load_collection
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import Chunk, Document
from helpline.retrieval.embedders.base import Embedder
from helpline.retrieval.factory import scratch_knowledge_base
from helpline.retrieval.ingest.chunking import chunk_document, embedding_text
from helpline.retrieval.ingest.syncing import records_from_chunks
from helpline.retrieval.knowledge_base import KnowledgeBase


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2), "n": len(ordered)}


def ingest_throughput(embedders: dict[str, Embedder], texts: list[str], *, rounds: int) -> dict[str, dict]:
    """Chunks/s of each embedder on the same texts, rounds interleaved so load changes hit all alike."""
    rates: dict[str, list[float]] = {name: [] for name in embedders}
    for embedder in embedders.values():
        embedder.embed_documents(texts)  # warm-up: first calls allocate, OpenVINO compiles kernels per new shape
    for _ in range(rounds):
        for name, embedder in embedders.items():
            start = time.perf_counter()
            embedder.embed_documents(texts)
            rates[name].append(len(texts) / (time.perf_counter() - start))
    return {
        name: {"chunks_per_s_median": round(statistics.median(r), 2), "rounds": [round(x, 2) for x in r]}
        for name, r in rates.items()
    }


def dataset_texts(spec: str, *, chunk_size: int, chunk_overlap: int, limit: int) -> list[str]:
    """The first ``limit`` chunk texts of a ``doc2dial:DIR`` or ``beir:DIR`` corpus, chunked as the KB does."""
    texts: list[str] = []
    for doc in load_collection(spec).documents:
        texts += [embedding_text(c) for c in chunk_document(doc, chunk_size=chunk_size, chunk_overlap=chunk_overlap)]
        if len(texts) >= limit:
            break
    return texts[:limit]


def synthetic_chunks(real: list[Chunk], total: int, *, seed: int = 0, words: int = 80) -> list[Chunk]:
    """``total - len(real)`` generated chunks of words from the real ones; 10% internal."""
    rng = random.Random(seed)
    vocabulary = sorted({w for c in real for w in c.text.split() if w.isalpha()})
    out = []
    for n in range(max(0, total - len(real))):
        text = " ".join(rng.choices(vocabulary, k=words))
        out.append(
            Chunk(
                chunk_id=f"synthetic-{n // 5}#{n % 5}",
                doc_id=f"synthetic-{n // 5}",
                title=f"Synthetic article {n // 5}",
                text=text,
                access="internal" if n % 10 == 0 else "public",
                content_hash=f"s{n}",
            )
        )
    return out


def build_scaled_kb(
    real_docs: list[Document], embedder: Embedder, *, total: int, store_dir: str, dim: int
) -> KnowledgeBase:
    """A knowledge base of ``total`` chunks in embedded Chroma: the real ones embedded, the rest random."""
    np = require("numpy", "retrieval")
    kb = scratch_knowledge_base(store_dir, embedder, name=f"bench-{total}")
    kb.sync(real_docs)
    real = kb.store.chunks()
    fake = synthetic_chunks(real, total)
    rng = np.random.default_rng(0)
    for start in range(0, len(fake), 5000):  # Chroma's largest batch is a little above 5000
        part = fake[start : start + 5000]
        vectors = rng.standard_normal((len(part), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        kb.store.upsert(part, vectors.tolist())
    kb.records.adopt(records_from_chunks(fake))
    kb.reindex()
    return kb


def query_latency(kb: KnowledgeBase, questions: list[str], *, repeats: int) -> dict[str, dict]:
    """p50/p95 per mode (query embedding included), after a warm-up pass."""
    runs: dict[str, Callable[[str], object]] = {
        "embed_query": kb.embedder.embed_query,
        "bm25": lambda q: kb.search(q, k=4, mode="bm25"),
        "dense": lambda q: kb.search(q, k=4, mode="dense"),
        "hybrid": lambda q: kb.search(q, k=4, mode="hybrid"),
        "hybrid_with_history": lambda q: kb.search(q, k=4, mode="hybrid", history=["I have a question about my order"]),
        # What an answer's retrieval costs: the hybrid search, then the abstention relevance read off its hits.
        "hybrid_answer": lambda q: relevance(kb.search(q, k=4, mode="hybrid"), "dense"),
    }
    out = {}
    for name, run in runs.items():
        for q in questions[:10]:
            run(q)
        samples = []
        for _ in range(repeats):
            for q in questions:
                start = time.perf_counter()
                run(q)
                samples.append((time.perf_counter() - start) * 1000)
        out[name] = percentiles(samples)
    return out


def scale_report(
    docs: list[Document], embedder: Embedder, questions: list[str], *, sizes: list[int], repeats: int
) -> dict[str, dict]:
    """Build each size in a throwaway Chroma and measure query latency there."""
    dim = len(embedder.embed_query("dimension probe"))
    out = {}
    for total in sizes:
        with tempfile.TemporaryDirectory(prefix="helpline-bench-") as store_dir:
            start = time.perf_counter()
            kb = build_scaled_kb(docs, embedder, total=total, store_dir=store_dir, dim=dim)
            build_s = time.perf_counter() - start
            out[str(total)] = {
                "chunks": kb.store.count(),
                "build_s": round(build_s, 1),
                "latency": query_latency(kb, questions, repeats=repeats),
                "peak_rss_mb": peak_rss_mb(),
            }
    return out
