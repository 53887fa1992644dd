"""`helpline conversations ...`: review logged answers, export the good ones as training data, erase a
customer's, purge the expired."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from helpline.cli.output import console, print_json
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.serving.factory import open_gateway_store
from helpline.serving.gateway.conversations import export_jsonl

conversations_app = typer.Typer(no_args_is_help=True, help="Logged conversations: review, export, erase, purge.")
#: What erasure does not reach, said each time it runs.
_NOT_ERASED = (
    "not touched: conversation exports and prepared dataset versions made earlier (datasets/NAME/vN hold "
    "scrubbed copies), backups, and log files"
)


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


@conversations_app.command("erase")
def conversations_erase(
    customer: str = typer.Option(None, "--customer", help="The customer's API key: its id, the key, or its prefix."),
    conversation: str = typer.Option(None, "--conversation", help="Instead: one conversation, by its id."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be erased; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Erase a customer's conversations: every turn with its passages and withdrawn drafts, feedback, comments,
    staff corrections and reviewed examples (datasets/reviewed/). The audit log records the erasure and its
    counts, never the content. The key itself stays (revoke it with `helpline keys revoke`)."""
    if (customer is None) == (conversation is None):
        raise ConfigError("say whose conversations to erase", hint="pass --customer KEY_ID or --conversation ID")
    ctx = Context.load()
    store = open_gateway_store(ctx)
    who = store.find_key(customer) if customer is not None else conversation
    ids = store.erase(who, actor="cli", dry_run=True)["response_ids"]
    reviewed = drop_reviewed_examples(ctx.workspace.datasets / "reviewed", set(ids), dry_run=dry_run)
    counts = store.erase(who, actor="cli", dry_run=dry_run, erased_elsewhere={"reviewed_examples": reviewed})
    counts = {k: v for k, v in counts.items() if k != "response_ids"} | {"reviewed_examples": reviewed}
    if as_json:
        print_json({**counts, "dry_run": dry_run, "not_erased": _NOT_ERASED})
        return
    verb = "would erase" if dry_run else "erased"
    console.print(f"{verb}: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()), highlight=False)
    console.print(f"[dim]{_NOT_ERASED}[/]")


@conversations_app.command("purge")
def conversations_purge(
    days: int = typer.Option(None, min=1, help="Keep this many days (default: the gateway.retention_days setting)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be purged; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Purge turns older than the retention period with their feedback (a serving gateway does it daily)."""
    ctx = Context.load()
    days = days or ctx.settings.gateway.retention_days
    if days is None:
        raise ConfigError(
            "no retention period is set", hint="pass --days N, or set gateway.retention_days (conversations are kept)"
        )
    counts = open_gateway_store(ctx).purge_expired(days, actor="cli", dry_run=dry_run)
    if as_json:
        print_json({**counts, "days": days, "dry_run": dry_run})
        return
    verb = "would purge" if dry_run else "purged"
    console.print(f"{verb} {counts['turns']} turns older than {days} days and {counts['feedback']} feedback rows")


def drop_reviewed_examples(folder: Path, response_ids: set[str], *, dry_run: bool = False) -> int:
    """Remove the reviewed examples of ``response_ids`` from the JSONL files in ``folder`` (each rewritten
    atomically, as the gateway writes them); returns how many there were."""
    dropped = 0
    for path in sorted(folder.glob("*.jsonl")) if response_ids else []:
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [ln for ln in lines if not ln.strip() or _response_id(ln) not in response_ids]
        dropped += len(lines) - len(kept)
        if len(kept) < len(lines) and not dry_run:
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(f"{ln}\n" for ln in kept), encoding="utf-8")
            tmp.replace(path)
    return dropped


def _response_id(line: str) -> str | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row.get("response_id") if isinstance(row, dict) else None
