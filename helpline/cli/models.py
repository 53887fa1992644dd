"""`helpline models ...`: base models, adapters and the aliases that choose what is served, and each model's
lineage."""

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
from helpline.platform.tracking import lineage_runs

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


@models_app.command("show")
def show_model(
    name: str = typer.Argument(..., help="Registered model name or alias."),
    as_json: bool = typer.Option(False, "--json", help="Print the record, its aliases and tracked runs as JSON."),
) -> None:
    """A model's lineage: what it was trained from and on, how it scored, its gate verdict, and the tracked
    (MLflow) runs that trained and judged it, with the command that opens them."""
    ctx = Context.load()
    record = ctx.registry.get_model(name)
    aliases = [a for a, target in ctx.registry.aliases().items() if target == record.name]
    runs = lineage_runs(record.metadata)
    if as_json:
        print_json({**record.model_dump(), "aliases": aliases, "tracked_runs": runs})
        return
    meta = record.metadata
    created = dt.datetime.fromtimestamp(record.created_at).strftime("%Y-%m-%d %H:%M")
    console.print(f"[bold]{record.name}[/] ({record.kind}) at {record.path}, registered {created}", highlight=False)
    for label, value in (("base model", record.base_model), ("aliases", ", ".join(aliases))):
        if value:
            console.print(f"{label}: {value}", highlight=False)
    dataset = meta.get("dataset") or (meta.get("training") or {}).get("dataset")
    if dataset:
        digest = str(dataset.get("hash"))[:16]
        console.print(f"dataset: {dataset.get('name')} {dataset.get('version')} (sha256 {digest}…)", highlight=False)
    if meta.get("metrics"):
        console.print(f"metrics: {meta['metrics']}", highlight=False)
    if meta.get("gate"):
        gate = meta["gate"]
        console.print(f"gate: {'passed' if gate.get('passed') else 'failed'} against {gate.get('baseline')} "
                      f"({gate.get('report')})", highlight=False)  # fmt: skip
    for what, run in runs.items():
        if "error" in run:
            console.print(f"{what} run: not tracked ({run['error']})", highlight=False)
        else:
            console.print(f"{what} run (MLflow): {run['run_id']} in experiment {run['experiment']}", highlight=False)
            console.print(f"  open: {run['open']}", highlight=False, soft_wrap=True)


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
