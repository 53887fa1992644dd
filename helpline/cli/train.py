"""`helpline data ...`, `helpline train ...` and this area's eval/bench commands.

torch, transformers, TRL and vLLM load only when a command runs what needs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from helpline.bench.training import run_bench
from helpline.cli.common import console, json_stdout, print_json
from helpline.evaluation.sft import generate_batched, load_eval_set, score_answers
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.training.data.prepare import PrepareOptions, prepare_dataset, resolve_dataset
from helpline.training.export import export_adapter
from helpline.training.prune import PruneOptions, run_prune
from helpline.training.sft.config import SFTConfig, load_config
from helpline.training.sft.trainer import load_tokenizer, publish_run, resolve_base_model, run_sft

data_app = typer.Typer()
train_app = typer.Typer()
eval_app = typer.Typer()
bench_app = typer.Typer()


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


@train_app.command("sft", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sft(
    ctx_: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="Preset YAML (helpline/training/configs/*.yaml)."),
    help_config: bool = typer.Option(False, "--help-config", help="List every config field and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Fine-tune a chat model (QLoRA by default). Extra KEY=VALUE arguments override the preset."""
    if help_config:
        for name, field in SFTConfig.model_fields.items():
            console.print(f"[bold]{name}[/] = {field.default!r}: {field.description}", highlight=False)
        return
    cfg, preset = load_config(config, ctx_.args)

    ctx = Context.load()
    with json_stdout(as_json):
        summary = run_sft(cfg, preset=preset, ctx=ctx, console=console)
        console.print(
            f"[green]trained[/] {summary['artifact']} in {summary['train_seconds_this_session']} s; "
            f"best eval loss {summary['best_eval_loss']}"
        )
        summary.update(publish_run(summary, cfg, preset=preset, ctx=ctx, console=console))
        if "registered" in summary:
            console.print(f"registered {summary['registered']['name']} (a base model: serve it, or train on it)")
    if as_json:
        print_json(summary)


@train_app.command("prune")
def prune(
    model: str = typer.Option(..., help="Registry name/alias or folder of the chat model to prune."),
    layers: int = typer.Option(..., help="Decoder layers to keep (the first and last are always kept)."),
    dataset: str = typer.Option(..., help="Prepared dataset whose conversations calibrate the choice (NAME)."),
    name: str = typer.Option(..., help="Registry name of the pruned model."),
    method: str = typer.Option("block", help="block: the contiguous block that changes the stream least; "
                               "layers: the individually least influential layers; loss: the layers whose "
                               "removal raises the calibration loss least (slowest, least damage)."),
    samples: int = typer.Option(64, min=1, help="Training conversations scored (a quarter as many held out)."),
    max_length: int = typer.Option(512, min=16, help="Tokens per calibration conversation."),
    force: bool = typer.Option(False, help="Replace an existing model of that name."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove the decoder layers a model needs least (a faster student); heal it by training afterwards."""

    if method not in ("block", "layers", "loss"):
        raise ConfigError(f"unknown --method {method!r}", hint="use block, layers or loss")
    options = PruneOptions(model=model, layers=layers, dataset=dataset, name=name, method=method,  # type: ignore[arg-type]
                           samples=samples, max_length=max_length, force=force)  # fmt: skip
    with json_stdout(as_json):
        report = run_prune(options, ctx=Context.load(), console=None if as_json else console)
    if as_json:
        print_json(report)
        return
    console.print(
        f"[green]pruned[/] {model} → {name}: {report['layers_before']} → {report['layers_after']} layers "
        f"(dropped {report['dropped_layers']}), {report['parameters_m']}M parameters; held-out loss "
        f"{report['held_out_loss_before']} → {report['held_out_loss_after']}",
        highlight=False,
    )
    console.print("next: heal it by training, e.g. helpline train sft --config smollm2-pruned-heal-cpu")


@train_app.command("export")
def export(
    run_dir: Path = typer.Argument(..., help="A training run folder (with adapter/ and training_summary.json)."),
    name: str | None = typer.Option(None, help="Registry name (default: the run's name)."),
    merge: bool = typer.Option(False, help="Also write a merged full checkpoint (for engines without LoRA)."),
    as_json: bool = typer.Option(False, "--json", help="Print the gate's report as JSON."),
) -> None:
    """Run the adapter export gate: rank, modules_to_save, loads in vLLM, agrees with PEFT; then register."""
    report = export_adapter(run_dir, ctx=Context.load(), name=name, merge=merge, console=console)
    if as_json:
        print_json(report)


def _model_and_adapter(ref: str, ctx: Context) -> tuple[str, str | None]:
    """Registry name/alias or folder → (base checkpoint path, adapter path or None)."""
    path = Path(ref).expanduser()
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        return base, str(path)
    if (path / "config.json").is_file():
        return str(path), None
    record = ctx.registry.chat_model(ref)
    return ctx.registry.base_of(record).path, record.path if record.kind == "adapter" else None


@eval_app.command("sft")
def eval_sft(
    model: str = typer.Option(..., help="Registry name/alias, adapter folder or checkpoint folder."),
    dataset: str = typer.Option(..., help="bitext:CSV or chat:JSONL (e.g. a prepared test.jsonl)."),
    baseline: str | None = typer.Option(None, help="Also score this model (e.g. the base) on the same examples."),
    limit: int = typer.Option(100, help="Examples scored (a seeded sample)."),
    max_tokens: int = typer.Option(192, help="Longest answer generated."),
    batch_size: int = typer.Option(8, help="Generation batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """ROUGE-L to the reference answers and the structure check (steps, placeholders, opener)."""
    ctx = Context.load()
    prompts, references, questions = load_eval_set(dataset, limit)
    report: dict = {"dataset": dataset, "examples": len(prompts), "max_tokens": max_tokens}
    for label, ref in (("model", model), ("baseline", baseline)):
        if ref is None:
            continue
        base, adapter = _model_and_adapter(ref, ctx)
        with console.status(f"generating {len(prompts)} answers with {ref}"):
            answers = generate_batched(base, adapter, prompts, max_tokens=max_tokens, batch_size=batch_size)
        report[label] = {"name": ref, **score_answers(answers, references, questions), "sample": answers[0][:300]}
    if as_json:
        print_json(report)
    else:
        for label in ("model", "baseline"):
            if label in report:
                r = report[label]
                console.print(f"{r['name']}: ROUGE-L {r['rougeL_f1']}, structure {r['structure']}")


@bench_app.command("training")
def bench_training(
    model: str = typer.Option("smollm2-135m-instruct", help="Registry name or folder of the base model."),
    dataset: str = typer.Option("bitext", help="Prepared dataset (NAME, NAME/vN or folder)."),
    steps: int = typer.Option(4, help="Optimizer steps per method (the first is not timed)."),
    batch: int = typer.Option(
        1,
        help="Examples per step. 1 with checkpointing measures what the methods store; larger batches add "
        "activations (on a 135M model the logits over a 49k vocabulary dominate from batch 4).",
    ),
    max_length: int = typer.Option(256, help="Longest example kept."),
    methods: str = typer.Option("full,lora,qlora", help="Comma-separated methods."),
    gradient_checkpointing: bool = typer.Option(
        True,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Recompute activations in backward, for all methods alike (as QLoRA recipes do).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Peak memory (RSS) and tokens/s of full fine-tuning, LoRA and QLoRA on the same batches."""

    ctx = Context.load()
    base = resolve_base_model(model, ctx)
    data = resolve_dataset(dataset, ctx.workspace.datasets)
    with console.status("training each method in its own process"):
        report = run_bench(
            base, data, methods=methods.split(","), steps=steps, batch=batch, max_length=max_length,
            checkpointing=gradient_checkpointing,
        )  # fmt: skip
    if as_json:
        print_json(report)
        return
    for method, r in report["methods"].items():
        console.print(f"{method}: peak {r.get('peak_rss_mb')} MB, {r.get('tokens_per_s')} tokens/s")
