"""`helpline eval retrieval`: how well the knowledge base's search finds the right passages."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from helpline.cli.eval import eval_app
from helpline.cli.output import console, print_json
from helpline.datasets.collections import load_collection
from helpline.evaluation.retrieval import run_eval
from helpline.platform.context import Context
from helpline.retrieval.embedders.base import CachedEmbedder
from helpline.retrieval.factory import build_embedder
from helpline.retrieval.knowledge_base import SearchOptions


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
    params = {"dataset": dataset, "modes": mode, "history": history, "split": split, "limit": limit, "backend": backend,
              "chunk_size": chunk_size or r.chunk_size, "fusion": fusion, "history_turns": history_turns,
              "question_alone": question_alone}  # fmt: skip
    with (
        console.status(f"indexing {len(collection.documents)} documents, then {len(collection.queries)} queries"),
        ctx.tracker.start_run(kind="eval-retrieval", name=f"retrieval {dataset}", params=params) as tracked,
    ):
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
        tracked.log_metrics({f"{x.mode}{'_history' if x.history else ''}": x.metrics for x in results})
        tracked.log_dict(data, "report.json")
    if as_json:
        print_json(data)
        return
    table = Table("dataset", "mode", "history", *results[0].metrics)
    for x in results:
        table.add_row(x.dataset, x.mode, str(x.history), *(f"{v:.4f}" for v in x.metrics.values()))
    Console().print(table)
