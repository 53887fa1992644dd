"""`helpline train sft|preference|prune|export|distill`: fine-tune, preference-tune, prune, export and distil
models.

torch, transformers, TRL and vLLM load only when a command runs what needs them.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from helpline.cli.output import console, json_stdout, print_json
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.training.distill.config import (
    DistillConfig,
    FilterConfig,
    SourcesConfig,
    TeacherConfig,
    load_distill_config,
)
from helpline.training.distill.run import run_distill
from helpline.training.export import export_adapter
from helpline.training.gguf_export.export import DEFAULT_QUANTS, export_to_gguf
from helpline.training.preference import PreferenceConfig, load_preference_config, train_preference
from helpline.training.prune import PruneOptions, run_prune
from helpline.training.sft.config import SFTConfig, load_config
from helpline.training.sft.trainer import publish_run, run_sft

train_app = typer.Typer(no_args_is_help=True, help="Fine-tune and distil models.")


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


@train_app.command("preference", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def preference(
    ctx_: typer.Context,
    config: Path | None = typer.Option(None, "--config", help="Preset YAML (e.g. smollm2-135m-dpo-cpu)."),
    pairs: Path | None = typer.Option(None, "--pairs", help="JSONL of {prompt, chosen, rejected} pairs."),
    eval_pairs: Path | None = typer.Option(
        None, "--eval-pairs", help="Held-out pairs: how often the chosen answer wins, before and after."
    ),
    init_adapter: str | None = typer.Option(
        None, "--init-adapter", help="Adapter to continue (folder, run folder, or registry name/alias)."
    ),
    method: str | None = typer.Option(None, "--method", help="dpo or orpo (default: the preset's)."),
    overrides: list[str] = typer.Option([], "--set", help="KEY=VALUE override of a config field (repeatable)."),
    help_config: bool = typer.Option(False, "--help-config", help="List every config field and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Preference-tune an adapter (DPO or ORPO) on (chosen, rejected) pairs. Bare KEY=VALUE arguments override
    the preset too, as with `train sft`."""
    if help_config:
        for name, field in PreferenceConfig.model_fields.items():
            console.print(f"[bold]{name}[/] = {field.get_default(call_default_factory=True)!r}: "
                          f"{field.description}", highlight=False)  # fmt: skip
        return
    if pairs is None:
        raise ConfigError("--pairs is required", hint="--pairs FILE.jsonl, one {prompt, chosen, rejected} a line")
    flags = [f"{k}={v}" for k, v in (("init_adapter", init_adapter), ("method", method)) if v is not None]
    cfg, preset = load_preference_config(config, [*overrides, *ctx_.args, *flags])

    ctx = Context.load()
    with json_stdout(as_json):
        summary = train_preference(cfg, pairs, ctx=ctx, preset=preset, eval_pairs_path=eval_pairs, console=console)
        last = summary["log"][-1] if summary["log"] else {}
        console.print(
            f"[green]trained[/] {summary['artifact']} ({cfg.method}, {summary['global_step']} steps, "
            f"{summary['train_seconds']} s); last loss {last.get('loss')}, reward margin {last.get('rewards/margins')}",
            highlight=False,
        )
        if summary["eval"]:
            before, after = summary["eval"]["before"], summary["eval"]["after"]
            console.print(f"held-out pairs won by the chosen answer: {before['chosen_preferred']} → "
                          f"{after['chosen_preferred']}", highlight=False)  # fmt: skip
        if cfg.export:
            summary["export"] = export_adapter(Path(summary["run_dir"]), ctx=ctx, name=cfg.adapter_name,
                                               console=console)  # fmt: skip
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
    run_dir: Path = typer.Argument(
        ...,
        help="A training run folder (with adapter/ and training_summary.json); with --gguf also a model folder "
        "or a registered model (name or alias).",
    ),
    name: str | None = typer.Option(None, help="Registry name (default: the run's name)."),
    merge: bool = typer.Option(False, help="Also write a merged full checkpoint (for engines without LoRA)."),
    gguf: bool = typer.Option(
        False,
        "--gguf",
        help="Also write the merged model as GGUF files for llama.cpp and Ollama (implies --merge), checked "
        "against it, in .helpline/models/NAME-gguf.",
    ),
    gguf_quant: list[str] = typer.Option(
        list(DEFAULT_QUANTS), "--gguf-quant", help="GGUF variants to write: f16, q8_0, f32 (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the gate's report as JSON."),
) -> None:
    """Run the adapter export gate: rank, modules_to_save, loads in vLLM, agrees with PEFT; then register.
    With --gguf, also write GGUF files whose greedy answers are compared with the merged model's."""
    if not gguf:
        report = export_adapter(run_dir, ctx=Context.load(), name=name, merge=merge, console=console)
        if as_json:
            print_json(report)
        return
    with json_stdout(as_json):
        report = export_to_gguf(run_dir, ctx=Context.load(), name=name, quants=tuple(gguf_quant), console=console)
    if as_json:
        print_json(report)
        return
    _print_gguf(report.get("gguf", report))


def _print_gguf(report: dict) -> None:
    agreement = report["agreement"]
    table = Table("variant", "MB", "tensors", "greedy prefix", "next token", "exact", "prompts alike",
                  title=f"GGUF export of {report['name']} against the checkpoint ({agreement['prompts']} prompts, "
                  f"{agreement['max_tokens']} tokens)")  # fmt: skip
    for variant, entry in report["files"].items():
        figures = agreement[variant]
        table.add_row(variant, f"{entry['bytes'] / 1e6:.1f}", str(entry["tensors"]),
                      str(figures["mean_prefix_agreement"]), str(figures["next_token_agreement"]),
                      figures["exact_match"], figures["prompts_tokenized_alike"])  # fmt: skip
    console.print(table)
    console.print(f"[green]written[/] in {report['seconds']} s: {report['folder']}/", highlight=False)
    for name in [entry["file"] for entry in report["files"].values()] + ["Modelfile", "gguf_report.json"]:
        console.print(f"  {name}", highlight=False)
    console.print(f"Ollama: ollama create {report['name']} -f {report['modelfile']}", highlight=False)


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
