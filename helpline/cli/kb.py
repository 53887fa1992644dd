"""`helpline kb ...`: keep the knowledge base current; `helpline eval|bench retrieval`: measure it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from helpline.bench.retrieval import dataset_texts, ingest_throughput, peak_rss_mb, scale_report
from helpline.cli.common import console, fail, print_json
from helpline.datasets.collections import load_collection
from helpline.evaluation.hooks import regression_after_sync
from helpline.evaluation.retrieval import run_eval
from helpline.platform.context import Context
from helpline.platform.errors import HelplineError
from helpline.retrieval import SAMPLE_KB, sample_questions
from helpline.retrieval.embedders.base import CachedEmbedder
from helpline.retrieval.factory import BACKENDS, FAST_BACKENDS, build_embedder, open_knowledge_base
from helpline.retrieval.ingest.loaders import load_files, sample_texts
from helpline.retrieval.knowledge_base import SearchOptions

kb_app = typer.Typer(no_args_is_help=True, help="Add, sync, remove and search knowledge-base documents.")


def _summary(report, failures) -> dict:  # type: ignore[no-untyped-def]
    for failure in failures:
        console.print(f"[yellow]skipped[/] {failure.reason}", highlight=False)
    return {**report.summary(), "failed": [{"path": str(f.path), "reason": f.reason} for f in failures]}


def _show(summary: dict, as_json: bool) -> None:
    if as_json:
        print_json(summary)
        return
    console.print(
        f"added {len(summary['added'])}, updated {len(summary['updated'])}, deleted {len(summary['deleted'])}, "
        f"unchanged {summary['unchanged']}, failed {len(summary['failed'])}"
        + (f" (kept as they were: {', '.join(summary['kept'])})" if summary["kept"] else "")
        + (f" → knowledge-base version {summary['version']}" if summary["version"] else "")
    )


def sync_folder(ctx: Context, folder: Path, *, rebuild: bool = False) -> dict:
    """Sync ``folder`` into the knowledge base; returns a summary (used by `init` too)."""
    kb = open_knowledge_base(ctx)
    with console.status(f"indexing {folder}"):
        report, failures = kb.sync_folder(folder, rebuild=rebuild)
    return _summary(report, failures)


@kb_app.command("sync")
def sync(
    folder: Path = typer.Argument(..., help="Folder of articles (Markdown, HTML, text, PDF, DOCX, FAQ CSV/JSONL)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Drop the index and embed everything again."),
    check: bool = typer.Option(
        False,
        "--check",
        help="Then answer the support regression suite with --check-model (and FOLDER/QUESTIONS.yaml, when there "
        "is one, as served) and compare with the last check of that model; exit 1 if the pass rate or the mean "
        "score fell, or more answers were served wrong.",
    ),
    check_model: str = typer.Option("production", "--check-model", help="Model (name or alias) --check answers with."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Make the knowledge base match FOLDER: embed new and changed files, drop removed ones."""
    ctx = Context.load()
    if check:
        ctx.registry.chat_model(check_model)  # a wrong --check-model is refused before the sync
    summary = sync_folder(ctx, folder, rebuild=rebuild)
    if not check:
        _show(summary, as_json)
        return

    with console.status(f"answering the support suite with {check_model}"):
        questions = folder / "QUESTIONS.yaml"
        summary["check"] = result = regression_after_sync(
            ctx, model=check_model, questions=questions if questions.is_file() else None
        )
    _show(summary, as_json)
    before = (
        f"{result['previous_pass_rate']:.3f} / {result['previous_mean_score']}"
        if "previous_pass_rate" in result
        else "no earlier check of this model"
    )
    console.print(
        f"support suite with {result['model']}: pass rate / mean score {result['pass_rate']:.3f} / "
        f"{result['mean_score']} (before: {before}); report {result['report']}",
        highlight=False,
    )
    if "answers" in result:
        a = result["answers"]
        console.print(
            f"answers as served: correct {a['correct_rate']}, wrong served {a['wrong_served_rate']} "
            f"(before: {result.get('previous_wrong_served_rate', 'no earlier check')})",
            highlight=False,
        )
    if result.get("dropped"):
        fail(
            HelplineError(  # exit 1, as the gate exits on a regression
                f"the support suite got worse after this sync (knowledge-base version {summary['version']})",
                hint="the report lists the failing cases (and the answers served wrong, when the folder has a "
                "QUESTIONS.yaml); correct the articles and sync again",
            )
        )


@kb_app.command("add")
def add(
    files: list[Path] = typer.Argument(..., help="Files to add or update (the id is the file name without suffix)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add or update individual files; other documents are left alone."""
    docs, failures = load_files(files)
    kb = open_knowledge_base(Context.load())
    with console.status(f"indexing {len(docs)} documents"):
        report = kb.sync(docs, delete_missing=False)
    _show(_summary(report, failures), as_json)


@kb_app.command("remove")
def remove(
    doc_ids: list[str] = typer.Argument(..., help="Document ids (see `helpline kb list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove documents from the knowledge base."""
    _show(_summary(open_knowledge_base(Context.load()).remove(doc_ids), []), as_json)


@kb_app.command("list")
def list_documents(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The documents in the knowledge base."""
    docs = open_knowledge_base(Context.load()).documents()
    rows = [
        {"doc_id": d.doc_id, "title": d.title, "access": d.access, "chunks": len(d.chunk_ids), "state": d.state}
        for d in docs
    ]
    if as_json:
        print_json({"documents": rows})
        return
    table = Table("doc_id", "title", "access", "chunks", "state")
    for r in rows:
        table.add_row(r["doc_id"], r["title"], r["access"], str(r["chunks"]), r["state"])
    Console().print(table)


@kb_app.command("search")
def search(
    query: str = typer.Argument(..., help="A customer's question."),
    k: int = typer.Option(5, help="How many passages."),
    role: str = typer.Option("customer", help="customer (public only) or staff."),
    history: list[str] = typer.Option(None, "--history", help="An earlier user turn (repeat, oldest first)."),
    mode: str = typer.Option("", help="dense, bm25 or hybrid (default: retrieval.mode)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show which passages a question retrieves."""
    hits = open_knowledge_base(Context.load()).search(query, k=k, role=role, history=history or None, mode=mode or None)  # type: ignore[arg-type]
    if as_json:
        print_json({"query": query, "results": [h.model_dump() for h in hits]})
        return
    table = Table("score", "doc_id", "section", "passage")
    for h in hits:
        table.add_row(f"{h.score:.3f}", h.chunk.doc_id, h.chunk.section, h.chunk.text[:80])
    Console().print(table)


@kb_app.command("stats")
def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Documents, chunks and versions in the knowledge base."""
    ctx = Context.load()
    docs = open_knowledge_base(ctx).documents()
    versions = ctx.registry.kb_versions()
    data = {
        "documents": len(docs),
        "chunks": sum(len(d.chunk_ids) for d in docs),
        "unfinished": [d.doc_id for d in docs if d.state != "ok"],
        "versions": len(versions),
        "latest_version": versions[-1].model_dump() if versions else None,
    }
    if as_json:
        print_json(data)
    else:
        console.print(data)


# `helpline eval ...` and `helpline bench ...` commands of this area (mounted by helpline/cli/app.py).
eval_app = typer.Typer()
bench_app = typer.Typer()


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: str = typer.Option(..., help="beir:DIR (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) or doc2dial:DIR."),
    mode: list[str] = typer.Option(["hybrid"], help="bm25, dense or hybrid; repeat to compare modes."),
    history: bool = typer.Option(True, "--history/--no-history", help="Prepend the user's earlier turns."),
    split: str = typer.Option("test", help="BEIR qrels split."),
    limit: int = typer.Option(0, help="Only the first N queries (0: all)."),
    backend: str = typer.Option("torch", help="Embedder backend: torch (fp32), onnx-int8 or openvino-int8."),
    chunk_size: int = typer.Option(0, help="Chunk size in characters (default: retrieval.chunk_size)."),
    fusion: str = typer.Option("weighted", help="Hybrid fusion: weighted (min-max, 50/50) or rrf (k=60)."),
    history_turns: int = typer.Option(6, help="How many earlier user turns are searched with the question."),
    question_alone: bool = typer.Option(False, help="With history, also search the question alone and fuse it in."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recall@1/5/10, MRR@10 and nDCG@10 of the knowledge base's search on a test collection."""

    ctx = Context.load()
    r = ctx.settings.retrieval
    collection = load_collection(dataset, split=split, limit=limit or None)
    inner = build_embedder(ctx, backend=backend)
    embedder = CachedEmbedder(inner, ctx.workspace.indexes / "embedding-cache.sqlite")
    options = SearchOptions(fusion=fusion, history_turns=history_turns, question_alone=question_alone)  # type: ignore[arg-type]
    with console.status(f"indexing {len(collection.documents)} documents, then {len(collection.queries)} queries"):
        results = run_eval(
            collection,
            embedder,
            modes=mode,  # type: ignore[arg-type]
            history=history,
            chunk_size=chunk_size or r.chunk_size,
            chunk_overlap=min(r.chunk_overlap, (chunk_size or r.chunk_size) // 4),
            options=options,
        )
    data = {
        "results": [vars(x) for x in results],
        "embedding_cache": {"hits": embedder.hits, "misses": embedder.misses},
    }
    if as_json:
        print_json(data)
        return
    table = Table("dataset", "mode", "history", *results[0].metrics)
    for x in results:
        table.add_row(x.dataset, x.mode, str(x.history), *(f"{v:.4f}" for v in x.metrics.values()))
    Console().print(table)


@bench_app.command("retrieval")
def bench_retrieval(
    sizes: str = typer.Option("10000,100000", help="Knowledge-base sizes (chunks) to measure query latency at."),
    rounds: int = typer.Option(3, help="Rounds of the ingest measurement (the median is reported)."),
    repeats: int = typer.Option(3, help="Passes over the question set per latency measurement."),
    backend: str = typer.Option("openvino-int8", help="Embedder backend on the query path (see --help of kb)."),
    ingest_texts: str = typer.Option(
        "sample", help="Ingest texts: sample (the sample KB's chunks) or doc2dial:DIR / beir:DIR (its first chunks)."
    ),
    ingest_limit: int = typer.Option(300, help="At most this many chunks from a dataset given to --ingest-texts."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Ingest chunks/s (fp32 torch vs each int8 backend), query latency p50/p95 at each size, peak memory."""

    ctx = Context.load()
    r = ctx.settings.retrieval
    docs, texts = sample_texts(SAMPLE_KB, chunk_size=r.chunk_size, chunk_overlap=r.chunk_overlap)
    if ingest_texts != "sample":
        texts = dataset_texts(ingest_texts, chunk_size=r.chunk_size, chunk_overlap=r.chunk_overlap, limit=ingest_limit)
    questions = sample_questions()
    embedders = {b: build_embedder(ctx, backend=b) for b in BACKENDS}
    with console.status(f"embedding {len(texts)} chunks × {rounds} rounds per backend"):
        ingest = ingest_throughput(embedders, texts, rounds=rounds)
    fp32 = ingest["torch"]["chunks_per_s_median"]
    speedup = {b: round(ingest[b]["chunks_per_s_median"] / fp32, 2) for b in FAST_BACKENDS}
    with console.status(f"building {sizes} chunk indexes and timing {len(questions)} questions"):
        scale = scale_report(
            docs, embedders[backend], questions, sizes=[int(s) for s in sizes.split(",")], repeats=repeats
        )
    data = {
        "ingest": {"texts": ingest_texts, "chunks": len(texts), **ingest, "speedup_vs_fp32": speedup},
        "query_backend": backend,
        "scale": scale,
        "synthetic_vectors": "chunks beyond the sample KB's use random unit vectors and generated text",
        "peak_rss_mb": peak_rss_mb(),
    }
    if as_json:
        print_json(data)
    else:
        console.print(data)
