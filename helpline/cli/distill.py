"""`helpline train distill`, on this module's ``train_app`` (helpline/cli/app.py adds it to `train`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from helpline.cli.common import console, json_stdout, print_json
from helpline.platform.context import Context
from helpline.training.distill.config import (
    DistillConfig,
    FilterConfig,
    SourcesConfig,
    TeacherConfig,
    load_distill_config,
)
from helpline.training.distill.run import run_distill

train_app = typer.Typer()


@train_app.command("distill", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def distill(
    ctx_: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", help="Preset YAML (helpline/training/configs/distill-*.yaml)."
    ),
    help_config: bool = typer.Option(False, "--help-config", help="List every config field and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset manifest and training summary as JSON."),
) -> None:
    """Distil a teacher endpoint into a small student. Extra KEY=VALUE arguments (dotted: teacher.model=X,
    sft.max_steps=3) override the preset."""
    if help_config:
        _print_fields()
        return
    cfg = load_distill_config(config, ctx_.args)

    ctx = Context.load()
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with json_stdout(as_json), Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("teacher answers", total=None)
        result = run_distill(
            cfg,
            ctx=ctx,
            console=console,
            on_answer=lambda done, total: progress.update(task, completed=done, total=total),
        )
    manifest = result["dataset"]
    if as_json:
        print_json(result)
        return
    counts = manifest["counts"]
    splits = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    console.print(f"[green]dataset[/] {manifest['path']}: {splits}")
    console.print(
        f"prompts {counts['prompts']} ({counts['per_source']}), teacher asked {counts['teacher']['asked']}, "
        f"cached {counts['teacher']['cached_before']}, dropped {counts['dropped']}, kept {counts['kept']}",
        highlight=False,
    )
    for warning in manifest["warnings"]:
        console.print(f"[yellow]warning[/] {warning}")
    if "training" in result:
        t = result["training"]
        console.print(f"[green]student trained[/] {t['artifact']}; best eval loss {t['best_eval_loss']}")
    if "export" in result:
        console.print(f"[green]registered[/] {result['export'].get('registered')}")


def _print_fields() -> None:
    for prefix, model in (("", DistillConfig), ("teacher.", TeacherConfig), ("sources.", SourcesConfig),
                          ("filters.", FilterConfig)):  # fmt: skip
        for name, field in model.model_fields.items():
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            console.print(f"[bold]{prefix}{name}[/] = {default}: {field.description}", highlight=False)
