"""`helpline kb ...`: keep the knowledge base current (`helpline eval|bench retrieval` measure it)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from helpline.cli.output import console, fail, print_json, show
from helpline.evaluation.hooks import regression_after_sync
from helpline.platform.context import Context
from helpline.platform.durations import parse_duration
from helpline.platform.errors import ConfigError, HelplineError, NotFoundError
from helpline.retrieval.factory import open_knowledge_base
from helpline.retrieval.ingest.exports import KINDS
from helpline.retrieval.ingest.loaders import load_files
from helpline.retrieval.ingest.sources import is_website, read_source
from helpline.serving.connectors import check_connector
from helpline.serving.factory import open_gateway_store

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


def sync_source(ctx: Context, ref: str, *, rebuild: bool = False, max_pages: int = 500, max_depth: int = 5) -> dict:
    """Sync a help-centre export (``KIND:PATH``: zendesk, intercom, confluence, notion) or a website (crawled, or
    its sitemap.xml) into the knowledge base; returns a summary, with what was fetched for a website."""
    with console.status(f"{'crawling' if is_website(ref) else 'reading'} {ref}"):
        read = read_source(ref, crawl_dir=ctx.workspace.crawl_state, max_pages=max_pages, max_depth=max_depth)
    kb = open_knowledge_base(ctx)
    with console.status(f"indexing {len(read.docs)} documents"):
        report = kb.sync_source(read.origin, read.docs, rebuild=rebuild)
    summary = _summary(report, [])
    return summary if read.crawl is None else {**summary, "crawl": read.crawl}


@kb_app.command("sync")
def sync(
    source: str = typer.Argument(
        None,
        help="A folder of articles (Markdown, HTML, text, PDF, DOCX, FAQ CSV/JSONL); a help-centre export as "
        f"KIND:PATH ({', '.join(KINDS)}: the articles API's JSON pages, a folder of them, or JSONL); or a website: "
        "its start page or sitemap.xml (https://...), crawled on its own site, obeying robots.txt.",
    ),
    connector: str = typer.Option(
        None, "--source", help="A connector's name (`helpline kb connectors`): sync its source now, and record the run."
    ),
    max_pages: int = typer.Option(500, help="Website: most pages crawled."),
    max_depth: int = typer.Option(5, help="Website: most links followed from the start page."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Embed this source's documents again (uploads, other sources stay)."
    ),
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
    """Make the knowledge base match SOURCE: embed new and changed articles, drop removed ones that came from it."""
    ctx = Context.load()
    if (source is None) == (connector is None):
        raise ConfigError("name one source: SOURCE, or --source CONNECTOR", hint="`helpline kb sync --help`")
    if check:
        ctx.registry.chat_model(check_model)  # a wrong --check-model is refused before the sync
    if connector is not None:
        store = open_gateway_store(ctx)
        found = next((c for c in store.connectors() if c["name"] == connector), None)
        if found is None:
            raise NotFoundError(f"no connector {connector!r}", hint="`helpline kb connectors` lists them")
        source = found["source"]
    prefix, folder = source.split(":", 1)[0], Path(source)
    export = prefix in KINDS or (":" in source and prefix.isalpha() and not folder.exists())  # a KIND misspelt
    try:
        if is_website(source) or export:
            export = True
            summary = sync_source(ctx, source, rebuild=rebuild, max_pages=max_pages, max_depth=max_depth)
        else:
            summary = sync_folder(ctx, folder, rebuild=rebuild)
    except HelplineError as e:
        if connector is not None:  # recorded as the gateway records a scheduled run that failed
            store.connector_ran(connector, status="failed", summary={"error": e.message, "hint": e.hint})
        raise
    if connector is not None:
        store.connector_ran(connector, status="ok", summary=summary)
    if not check:
        _show(summary, as_json)
        return

    with console.status(f"answering the support suite with {check_model}"):
        questions = folder / "QUESTIONS.yaml"
        summary["check"] = result = regression_after_sync(
            ctx, model=check_model, questions=questions if not export and questions.is_file() else None
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
    access: str = typer.Option(
        None, "--access", help="public or internal, for files that do not say (default public)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add or update individual files; other documents are left alone."""
    docs, failures = load_files(files, default_access=access or "public")
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
    show(data, as_json)


@kb_app.command("connect")
def connect(
    name: str = typer.Argument(..., help="A slug naming the connector, e.g. zendesk-en."),
    source: str = typer.Argument(..., help=f"{' or '.join(k + ':PATH' for k in KINDS)} (an export), or https://..."),
    every: str = typer.Option("1d", "--every", help="How often the serving gateway syncs it (6h, 1d; at least 5m)."),
) -> None:
    """Add a connector (or change one): the gateway that serves the knowledge base syncs it on that schedule, and
    `helpline kb connectors` shows how each run went."""
    ctx = Context.load()
    every_s = parse_duration(every)
    check_connector(name, source, every_s)
    open_gateway_store(ctx).save_connector(name, source=source, every_s=every_s, actor="cli")
    console.print(f"[green]connected[/] {name}: {source} every {every} (the serving gateway syncs it; "
                  f"now: `helpline kb sync --source {name}`)")  # fmt: skip


@kb_app.command("connectors")
def connectors(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The connectors, their schedule and how their last run went."""
    rows = open_gateway_store(Context.load()).connectors()
    if as_json:
        print_json(rows)
        return
    table = Table("name", "source", "every", "last run", "status")
    for c in rows:
        last = time.strftime("%Y-%m-%d %H:%M", time.localtime(c["last_at"])) if c["last_at"] else "never"
        table.add_row(c["name"], c["source"], f"{c['every_s'] / 3600:g} h", last, c["last_status"] or "-")
    console.print(table)


@kb_app.command("disconnect")
def disconnect(name: str = typer.Argument(..., help="The connector to remove.")) -> None:
    """Remove a connector; the documents it brought stay (`helpline kb remove ID` deletes them)."""
    if not open_gateway_store(Context.load()).remove_connector(name):
        raise NotFoundError(f"no connector {name!r}", hint="`helpline kb connectors` lists them")
    console.print(f"removed connector {name}")
