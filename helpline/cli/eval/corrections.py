"""`helpline eval corrections`: does the model in production now answer each staff correction right, and does the help
centre still back it (served again as a staff answer)? Each check is recorded on the turn, and the Review page shows it
beside the correction."""

from __future__ import annotations

import tempfile

import typer
from rich.table import Table

from helpline.answering.staff_answers import backs
from helpline.cli.eval import eval_app
from helpline.cli.eval.answers import build_answer_pipeline
from helpline.cli.output import console, print_json
from helpline.evaluation.answer_paths import through_pipeline
from helpline.improve.recheck import check_corrections
from helpline.platform.context import Context
from helpline.serving.factory import open_gateway_store

MARK = {True: "[green]fixed[/]", False: "[red]not yet[/]", None: "[dim]not checkable[/]"}


@eval_app.command("corrections")
def corrections(
    model: str = typer.Option(
        None, "--model", help="Chat model (name, alias or folder; default: the production alias, else chat_model)."
    ),
    engine: str = typer.Option(None, help="auto | vllm | transformers (default: settings.engine)."),
    limit: int = typer.Option(2000, help="Newest corrected turns to ask again."),
    record: bool = typer.Option(True, help="Record each check on its turn (the Review page shows the latest)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Ask every staff-corrected question again, as served, and say whether the answer now holds the correction's
    facts, and whether the help centre still backs the correction (else it is no longer served again as a staff
    answer). Exit 1 when some correction is not fixed yet."""
    ctx = Context.load()
    name = model or ("production" if "production" in ctx.registry.aliases() else ctx.settings.chat_model)
    store = open_gateway_store(ctx)
    with tempfile.TemporaryDirectory(prefix="helpline-corrections-") as tmp:
        pipeline = build_answer_pipeline(ctx, model=name, engine=engine, documents=None, tmp=tmp)
        result, _ = check_corrections(
            store, through_pipeline(pipeline), model=pipeline.generator.name, limit=limit, record=record,
            backing=lambda case, correction: backs(pipeline.prepare(case.messages(), role=case.role).passages,
                                                   correction),
        )  # fmt: skip
    if as_json:
        print_json(result)
    else:
        table = Table("question", "now", "served", title=f"Staff corrections asked again ({result['model']})")
        for c in result["checks"]:
            table.add_row(c["question"][:70], MARK[c["fixed"]], c["outcome"] or "-")
        console.print(table)
        console.print(
            f"{result['fixed']} of {result['checked']} checkable corrections fixed"
            f" ({result['not_checkable']} not checkable: the correction states no fact the question or the old answer"
            " did not)"
        )
        if result["retired"]:
            console.print(f"[yellow]{result['retired']} correction(s) retired[/]: the help centre no longer backs them,"
                          " so they are not served again; review them in the Review page")  # fmt: skip
    raise typer.Exit(1 if result["not_fixed"] else 0)
