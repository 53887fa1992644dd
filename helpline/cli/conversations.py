"""`helpline conversations ...`: review logged answers and export the good ones as training data."""

from __future__ import annotations

from pathlib import Path

import typer

from helpline.cli.output import console, print_json
from helpline.platform.context import Context
from helpline.serving.factory import open_gateway_store
from helpline.serving.gateway.conversations import export_jsonl

conversations_app = typer.Typer(no_args_is_help=True, help="Logged conversations: review and export.")


@conversations_app.command("export")
def conversations_export(
    out: Path = typer.Argument(..., help="Output JSONL ({'messages': [...]} per line), for `helpline data prepare`."),
    include_unrated: bool = typer.Option(False, help="Also export answers nobody rated (not abstentions)."),
    no_scrub: bool = typer.Option(False, "--no-scrub", help="Keep personal data (default: redacted)."),
) -> None:
    """Export rated-up and staff-corrected conversations as training data."""
    ctx = Context.load()
    n = export_jsonl(open_gateway_store(ctx), out, include_unrated=include_unrated, scrub=not no_scrub)
    open_gateway_store(ctx).audit("cli", "conversations.export", str(out), {"rows": n})
    console.print(f"wrote {n} conversations to {out}")


@conversations_app.command("list")
def conversations_list(
    limit: int = typer.Option(20, help="How many, newest first."),
    rating: str = typer.Option(None, help="Only those rated up or down."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recent answers with their feedback."""
    turns = open_gateway_store(Context.load()).turns(limit=limit, rating=rating)
    if as_json:
        print_json({"conversations": turns})
        return
    for t in turns:
        q = t["messages"][-1]["content"][:60] if t["messages"] else ""
        console.print(f"{t['response_id']} {t['model']} {t.get('rating') or '-':4s} {q!r}", highlight=False)
