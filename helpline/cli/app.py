"""The `helpline` command: `init`, `ask`, `run` and one command group per module (models, kb, data, train,
eval, bench, keys, conversations).

Every module states its helpline dependencies at its top; heavy libraries (torch, vLLM, Chroma,
transformers) load through ``require`` inside the code that uses them, so `helpline --help` stays fast.
"""

from __future__ import annotations

import typer
import typer.main

from helpline.cli.backup import backup_app
from helpline.cli.bench import bench_app
from helpline.cli.conversations import conversations_app
from helpline.cli.data import data_app
from helpline.cli.eval import eval_app
from helpline.cli.improve import improve_app
from helpline.cli.kb import kb_app, sync_folder
from helpline.cli.keys import keys_app
from helpline.cli.models import models_app
from helpline.cli.output import console, fail, print_json
from helpline.cli.serve import serving_app
from helpline.cli.train import train_app
from helpline.guard.selection import register_bundled_detector
from helpline.platform.bundled import import_bundled
from helpline.platform.context import Context
from helpline.platform.errors import HelplineError
from helpline.retrieval import SAMPLE_KB

app = typer.Typer(
    no_args_is_help=True,
    help="helpline: a self-hosted customer-support assistant. Start with `helpline init`.",
    pretty_exceptions_enable=False,
)
# Each group's module owns its typer app; `ask` and `run` (serve.py) join the root's own commands.
app.add_typer(models_app, name="models")
app.add_typer(kb_app, name="kb")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
app.add_typer(keys_app, name="keys")
app.add_typer(conversations_app, name="conversations")
app.add_typer(serving_app)
app.add_typer(backup_app)  # `backup` and `restore` join the root's commands too
app.add_typer(improve_app)  # `improve` too


@app.command()
def init(
    skip_kb: bool = typer.Option(False, help="Do not index the sample knowledge base."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create the workspace, import the bundled models and index the sample knowledge base."""
    ctx = Context.load()
    s = ctx.settings
    for name in ("smollm2-135m-instruct", s.embedder):
        with console.status(f"importing {name} (first time: up to a minute)"):
            import_bundled(name, workspace=ctx.workspace, registry=ctx.registry)
    if "production" not in ctx.registry.aliases():
        ctx.registry.set_alias("production", "smollm2-135m-instruct", actor="init")

    register_bundled_detector(ctx)  # every answer is verified from the first run
    summary = {} if skip_kb else sync_folder(ctx, SAMPLE_KB)
    result = {"workspace": str(ctx.workspace.root), "aliases": ctx.registry.aliases(), "kb": summary}
    if as_json:
        print_json(result)
    else:
        console.print(f"[green]ready[/] workspace {ctx.workspace.root}")
        console.print('next: helpline ask "How do I return an item?"   or   helpline run')


@app.command("commands", hidden=True)
def commands(groups: list[str] = typer.Argument(..., help="Command groups, e.g. train eval.")) -> None:
    """The commands of GROUPS as JSON ("train sft", ...): what the gateway may run as console jobs."""
    root = typer.main.get_command(app)
    out = []
    for group in groups:
        cmd = root.commands.get(group)  # type: ignore[attr-defined]
        subcommands = getattr(cmd, "commands", None)
        if cmd is not None and subcommands is None:  # a root command that is its own job (`improve`)
            out.append(group)
        else:
            out += [f"{group} {name}" for name in sorted(subcommands or {})]
    print_json(out)


def main() -> None:
    """Entry point: every HelplineError becomes a readable message and an exit code."""
    try:
        app()
    except HelplineError as e:
        fail(e)
