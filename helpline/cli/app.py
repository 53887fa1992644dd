"""The `helpline` command: composes each area's command groups.

Every module states its helpline dependencies at its top; heavy libraries (torch, vLLM, Chroma,
transformers) load through ``require`` inside the code that uses them, so `helpline --help` stays fast.
"""

from __future__ import annotations

import typer
import typer.main

from helpline.cli import answers as answers_cli
from helpline.cli import distill as distill_cli
from helpline.cli import evaluate as evaluation_cli
from helpline.cli import kb as retrieval_cli
from helpline.cli import serve as serving_cli
from helpline.cli import train as training_cli
from helpline.cli.common import console, fail, models_app, print_json
from helpline.cli.kb import SAMPLE_KB, kb_app, sync_folder
from helpline.cli.serve import serving_app
from helpline.guard.selection import register_bundled_detector
from helpline.platform.bundled import import_bundled
from helpline.platform.context import Context
from helpline.platform.errors import HelplineError

app = typer.Typer(
    no_args_is_help=True,
    help="helpline: a self-hosted customer-support assistant. Start with `helpline init`.",
    pretty_exceptions_enable=False,
)
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate retrieval, models and answers.")
bench_app = typer.Typer(no_args_is_help=True, help="Measure speed and memory.")
data_app = typer.Typer(no_args_is_help=True, help="Prepare training data.")
train_app = typer.Typer(no_args_is_help=True, help="Fine-tune and distil models.")

# Each area contributes commands to the shared groups; it owns them in its own cli.py.
data_app.add_typer(training_cli.data_app)
train_app.add_typer(training_cli.train_app)
train_app.add_typer(distill_cli.train_app)
for area in (retrieval_cli, training_cli, evaluation_cli, answers_cli):
    eval_app.add_typer(area.eval_app)
for area in (retrieval_cli, training_cli, evaluation_cli, serving_cli, answers_cli):
    bench_app.add_typer(area.bench_app)

app.add_typer(models_app, name="models")
app.add_typer(kb_app, name="kb")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")
app.add_typer(serving_cli.keys_app, name="keys")
app.add_typer(serving_cli.conversations_app, name="conversations")
app.add_typer(serving_app)


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
        out += [f"{group} {name}" for name in sorted(getattr(cmd, "commands", {}))]
    print_json(out)


def main() -> None:
    """Entry point: every HelplineError becomes a readable message and an exit code."""
    try:
        app()
    except HelplineError as e:
        fail(e)
