"""`helpline backup DEST` and `helpline restore SRC` (root commands): the workspace copied while a gateway
serves it, and put back in a new place or over the old one."""

from __future__ import annotations

from pathlib import Path

import typer

from helpline.cli.output import console, print_json
from helpline.platform.context import Context
from helpline.platform.workspace import Workspace
from helpline.serving.backup import backup_workspace, restore_workspace

backup_app = typer.Typer()


@backup_app.command("backup")
def backup(
    dest: Path = typer.Argument(..., help="New (or empty) folder for the backup, outside the workspace."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    database_elsewhere: bool = typer.Option(
        False,
        "--database-elsewhere",
        help="The gateway's database is on PostgreSQL (database_url) and backed up with pg_dump: copy the rest.",
    ),
) -> None:
    """Back up the workspace (registry, conversations and keys, knowledge base, models, adapters, datasets,
    reports), consistently even while `helpline run` serves it."""
    settings = Context.load().settings
    with console.status(f"backing up {settings.workspace} to {dest}"):
        manifest = backup_workspace(
            Workspace.at(settings.workspace), dest, settings=settings, database_elsewhere=database_elsewhere
        )
    if as_json:
        print_json(manifest)
        return
    size = sum(f["size"] for f in manifest["files"])
    console.print(f"[green]backed up[/] {len(manifest['files'])} files ({size / 1e6:.1f} MB) to {dest}")
    if manifest["models_outside_workspace"]:
        outside = ", ".join(manifest["models_outside_workspace"])
        console.print(f"[yellow]not in the backup[/] (registered from outside the workspace): {outside}")


@backup_app.command("restore")
def restore(
    source: Path = typer.Argument(..., help="A folder `helpline backup` wrote."),
    to: Path = typer.Option(None, "--to", help="Workspace folder to restore into (default: the `workspace` setting)."),
    force: bool = typer.Option(False, "--force", help="Replace the workspace there (only once the copy is verified)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Restore a backup into a new or empty workspace folder, after checking every file against its manifest."""
    settings = Context.load().settings
    target = to or settings.workspace
    with console.status(f"restoring {source} into {target}"):
        result = restore_workspace(source, target, settings=settings, force=force)
    if as_json:
        print_json(result)
        return
    console.print(f"[green]restored[/] {result['files']} files into {result['workspace']}")
    if to is not None:
        console.print(f"serve it with HELPLINE_WORKSPACE={result['workspace']} (or `workspace:` in helpline.yaml)")
    if result["models_outside_workspace"]:
        outside = ", ".join(result["models_outside_workspace"])
        console.print(f"[yellow]registered from outside the workspace, not restored:[/] {outside}")
