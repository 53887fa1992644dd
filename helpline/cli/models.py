"""`helpline models ...`: base models, adapters and the aliases that choose what is served."""

from __future__ import annotations

import datetime as dt

import typer
from rich.console import Console
from rich.table import Table

from helpline.cli.output import console, print_json
from helpline.platform.bundled import BUNDLED, import_bundled
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.model_import import import_model
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
    refs: list[str] = typer.Argument(
        None,
        help=f"Bundled models ({', '.join(BUNDLED)}; default: all of them), or a model of your own: a local Hugging "
        "Face folder, a .gguf file, or a hub id (owner/name; downloaded when online).",
    ),
    name: str | None = typer.Option(None, help="Registry name of your own model (default: from its folder or id)."),
    copy: bool = typer.Option(True, "--copy/--no-copy", help="Copy a local folder into the workspace (default), or "
                              "register it where it is (large models; `helpline backup` then leaves it out)."),
    force: bool = typer.Option(False, help="Bundled models: convert again even if the checkpoint exists."),
    as_json: bool = typer.Option(False, "--json", help="Print what was imported, with its checks, as JSON."),
) -> None:
    """Import models into the workspace and registry: the bundled ones, or your own, checked first (architecture
    vLLM serves, chat template, size against memory)."""
    ctx = Context.load()
    refs = refs or list(BUNDLED)
    if name is not None and len(refs) != 1:
        raise ConfigError("--name names one model", hint="import one model at a time with --name")
    reports = []
    for ref in refs:
        if ref in BUNDLED:
            with console.status(f"importing {ref} (first time: up to a minute)"):
                record = import_bundled(ref, workspace=ctx.workspace, registry=ctx.registry, force=force)
            reports.append({"name": record.name, "kind": record.kind, "path": record.path, "source": "bundled"})
            console.print(f"[green]imported[/] {record.name} → {record.path}")
            continue
        with console.status(f"checking and importing {ref}"):
            record, report = import_model(ref, workspace=ctx.workspace, registry=ctx.registry, name=name, copy=copy)
        reports.append(report.as_dict())
        console.print(f"[green]imported[/] {record.name} ({record.kind}, {report.architecture or 'embedder'}, "
                      f"{report.size_gb} GB) → {record.path}")  # fmt: skip
        for warning in report.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
    if as_json:
        print_json(reports)


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
