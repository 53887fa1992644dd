"""`helpline data prepare`: turn conversations into a versioned, scrubbed, split training dataset.

The tokenizer (transformers) loads only when lengths are checked against a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from helpline.cli.output import console, print_json
from helpline.platform.context import Context
from helpline.training.data.openai_export import export_openai
from helpline.training.data.prepare import PrepareOptions, prepare_dataset, resolve_dataset
from helpline.training.sft.config import SFTConfig
from helpline.training.sft.trainer import load_tokenizer, resolve_base_model

data_app = typer.Typer(no_args_is_help=True, help="Prepare training data.")


def _token_counter(ctx: Context, model: str | None, chat_template: str | None):
    """A function counting a conversation's tokens with the model's chat template, and the context size."""
    if model is None:
        return None, None, ""

    path = resolve_base_model(model, ctx)
    tokenizer = load_tokenizer(path, SFTConfig(dataset="-", chat_template=chat_template))
    config = json.loads((path / "config.json").read_text())
    context = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")

    def count(messages: list[dict]) -> int:
        # transformers 5 returns a BatchEncoding from tokenize=True: count the ids of the rendered text.
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count, context, model


@data_app.command("prepare")
def prepare(
    source: list[str] = typer.Option(
        ..., "--source", help="KIND:PATH, repeatable: bitext:CSV, chat:JSONL, reviewed:JSONL, doc2dial:DIR."
    ),
    max_per_source: int | None = typer.Option(None, help="Seeded sample of at most N conversations per source."),
    out: str = typer.Option(..., "--out", help="Dataset name; written to <workspace>/datasets/NAME/vN."),
    model: str | None = typer.Option(
        "smollm2-135m-instruct", help="Model whose tokenizer and context length check lengths ('' to skip)."
    ),
    chat_template: str | None = typer.Option(None, help="Template for a model without one (chatml, gemma, file)."),
    max_tokens: int | None = typer.Option(None, help="Longest conversation kept, in tokens (default: context)."),
    validation: float = typer.Option(0.05, help="Share held out for validation."),
    test: float = typer.Option(0.10, help="Share held out for testing."),
    seed: int = typer.Option(0, help="Seed of the split."),
    skip_invalid: bool = typer.Option(False, help="Drop malformed rows (counted) instead of refusing the file."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Validate, scrub PII, deduplicate and split conversations into a versioned dataset."""
    ctx = Context.load()
    options = PrepareOptions(
        sources=source,
        name=out,
        validation=validation,
        test=test,
        seed=seed,
        max_tokens=max_tokens,
        skip_invalid=skip_invalid,
        max_per_source=max_per_source,
    )
    with console.status("loading the tokenizer"):
        count, context, tokenizer_name = _token_counter(ctx, model or None, chat_template)
    with console.status("validating, scrubbing, deduplicating, splitting"):
        manifest = prepare_dataset(
            options,
            datasets_dir=ctx.workspace.datasets,
            count_tokens=count,
            context_length=context,
            tokenizer_name=tokenizer_name,
        )
    if as_json:
        print_json(manifest)
        return
    splits = ", ".join(f"{k} {v['count']}" for k, v in manifest["splits"].items())
    console.print(f"[green]prepared[/] {manifest['path']}: {splits}")
    console.print(f"dropped: {json.dumps({k: v for k, v in manifest['counts'].items() if 'dropped' in k})}")
    console.print(
        f"PII replaced: {manifest['scrubber']['replaced']}; "
        f"scrubber recall on the labelled sample: {manifest['scrubber']['labelled_sample']['recall']}"
    )


@data_app.command("export-openai")
def export_openai_jsonl(
    dataset: str = typer.Argument(..., help="A prepared dataset: NAME (latest version), NAME/vN or its folder."),
    out: Path = typer.Option(..., "--out", help="The JSONL file to write."),
    split: str = typer.Option("train", help="train, validation or test."),
    max_tokens: int = typer.Option(65536, help="The fine-tuning context of the model it is for, in tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Write a prepared dataset as OpenAI chat fine-tuning JSONL, checked as the managed fine-tuning APIs check an
    upload (a file they would refuse is not written)."""
    ctx = Context.load()
    report = export_openai(resolve_dataset(dataset, ctx.workspace.datasets), split=split, out=out,
                           max_tokens=max_tokens)  # fmt: skip
    if as_json:
        print_json(report.as_dict())
        return
    console.print(f"[green]wrote[/] {report.examples} examples to {out} (about {report.estimated_tokens['total']} "
                  "tokens)")  # fmt: skip
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
