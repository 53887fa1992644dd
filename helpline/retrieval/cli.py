"""`helpline kb ...`: keep the knowledge base current."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from helpline.platform.cli import console, print_json
from helpline.platform.context import Context

kb_app = typer.Typer(no_args_is_help=True, help="Add, sync, remove and search knowledge-base documents.")

SAMPLE_KB = Path(__file__).parent / "sample_kb"


def sync_folder(ctx: Context, folder: Path) -> dict:
    """Sync ``folder`` into the knowledge base; returns a summary (used by `init` too)."""
    from helpline.retrieval.factory import open_knowledge_base
    from helpline.retrieval.loaders import load_directory

    docs, failures = load_directory(folder)
    with console.status(f"indexing {len(docs)} documents from {folder}"):
        report = open_knowledge_base(ctx.settings, ctx.workspace, ctx.registry).sync(docs)
    for failure in failures:
        console.print(f"[yellow]skipped[/] {failure.reason}")
    return {
        "added": report.added,
        "updated": report.updated,
        "deleted": report.deleted,
        "unchanged": report.unchanged,
        "chunks_embedded": report.chunks_embedded,
        "failed": [{"path": str(f.path), "reason": f.reason} for f in failures],
        "version": report.version.id if report.version else None,
    }


@kb_app.command("sync")
def sync(
    folder: Path = typer.Argument(..., help="Folder of Markdown/text articles."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Make the knowledge base match FOLDER: embed new and changed files, drop removed ones."""
    summary = sync_folder(Context.load(), folder)
    if as_json:
        print_json(summary)
    else:
        console.print(
            f"added {len(summary['added'])}, updated {len(summary['updated'])}, "
            f"deleted {len(summary['deleted'])}, unchanged {summary['unchanged']}, "
            f"failed {len(summary['failed'])}"
        )


@kb_app.command("search")
def search(
    query: str = typer.Argument(..., help="A customer's question."),
    k: int = typer.Option(5, help="How many passages."),
    role: str = typer.Option("customer", help="customer (public only) or staff."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show which passages a question retrieves."""
    from helpline.retrieval.factory import open_knowledge_base

    ctx = Context.load()
    hits = open_knowledge_base(ctx.settings, ctx.workspace, ctx.registry).search(query, k=k, role=role)
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
    from helpline.retrieval.factory import open_knowledge_base

    ctx = Context.load()
    chunks = open_knowledge_base(ctx.settings, ctx.workspace, ctx.registry).store.chunks()
    versions = ctx.registry.kb_versions()
    data = {
        "documents": len({c.doc_id for c in chunks}),
        "chunks": len(chunks),
        "versions": len(versions),
        "latest_version": versions[-1].model_dump() if versions else None,
    }
    if as_json:
        print_json(data)
    else:
        console.print(data)


# `helpline eval ...` and `helpline bench ...` commands of this area (mounted by helpline/cli.py).
eval_app = typer.Typer()
bench_app = typer.Typer()
