"""The SFT recipe: one linear script on TRL's SFTTrainer and PEFT. setup → train → save → cleanup.

    helpline train sft --config helpline/training/configs/smollm2-135m-qlora-cpu.yaml [key=value ...]

QLoRA (4-bit NF4 base, double quantization, LoRA on the attention and MLP projections) by default;
``method=lora`` and ``method=full`` are the alternatives. The loss covers the assistant answers
only; every example is checked (prompt tokens -100, end-of-turn token trained) before training.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, DataError, HelplineError
from helpline.platform.lazy_imports import require
from helpline.training.data.prepare import resolve_dataset
from helpline.training.export import check_export_names, export_adapter
from helpline.training.sft.callbacks import metrics_file, resume_with_new_callbacks, tracking
from helpline.training.sft.config import SFTConfig
from helpline.training.sft.masking import load_chat_template, tokenize_example


def resolve_base_model(name_or_path: str, ctx: Context) -> Path:
    """A registry name/alias of a chat model, or a folder holding a checkpoint."""
    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    return Path(ctx.registry.chat_model(name_or_path).path)


def is_chat_model(name_or_path: str, ctx: Context) -> bool:
    """What the registry says of a model (a folder, not a registry name, counts as a chat model: the recipes
    train and prune chat models)."""
    try:
        return bool(ctx.registry.get_model(name_or_path).metadata.get("chat", True))
    except HelplineError:
        return True


def load_tokenizer(model_path: Path, cfg: SFTConfig):
    """The base model's tokenizer with the configured chat template."""
    transformers = require("transformers", "train")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_path))
    template = load_chat_template(cfg.chat_template)
    if template is not None:
        tokenizer.chat_template = template
    if not tokenizer.chat_template:
        raise ConfigError(
            f"{model_path.name} has no chat template",
            hint="set chat_template=chatml (or gemma, or a .jinja file) with matching assistant_marker/end_of_turn",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenize_split(tokenizer, file: Path, cfg: SFTConfig, limit: int | None) -> tuple[list[dict], int]:
    """Tokenize and check every example of a split; returns examples and how many were too long."""
    examples, too_long = [], 0
    with file.open(encoding="utf-8") as fh:
        for line in fh:
            if limit is not None and len(examples) >= limit:
                break
            messages = json.loads(line)["messages"]
            ex = tokenize_example(
                tokenizer,
                messages,
                assistant_marker=cfg.assistant_marker,
                end_of_turn=cfg.end_of_turn,
                max_length=cfg.max_length,
            )
            if ex is None:
                too_long += 1
            else:
                examples.append(ex)
    if not examples and too_long == 0:
        raise DataError(f"{file} has no examples", hint="prepare the dataset again with a larger share for this split")
    if not examples:
        raise DataError(f"{file}: no example fits max_length={cfg.max_length}", hint="raise max_length")
    return examples, too_long


def load_model(model_path: Path, cfg: SFTConfig):
    """The base model for the method: 4-bit + LoRA, fp32 + LoRA, or fp32 for full fine-tuning."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    peft = require("peft", "train")
    kwargs: dict = {"dtype": torch.bfloat16 if cfg.bf16 else torch.float32}
    if cfg.method == "qlora":
        require("bitsandbytes", "train")
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=cfg.quant_type,
            bnb_4bit_use_double_quant=cfg.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, cfg.compute_dtype),
        )
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
    if cfg.method == "full":
        return model
    if cfg.method == "qlora":
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lora = peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return peft.get_peft_model(model, lora)


def trl_args(cfg: SFTConfig, checkpoints: Path):
    """TRL's SFTConfig from ours (only the fields we own; everything else keeps TRL's default)."""
    trl = require("trl", "train")
    return trl.SFTConfig(
        output_dir=str(checkpoints),
        max_length=cfg.max_length,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        train_sampling_strategy=cfg.train_sampling_strategy,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        seed=cfg.seed,
        data_seed=cfg.seed,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps or cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=cfg.logging_steps,
        report_to=[],
        bf16=cfg.bf16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        fsdp=cfg.fsdp,
        fsdp_config=cfg.fsdp_config or None,
        dataloader_num_workers=0,
    )


def output_dir(cfg: SFTConfig, preset: str, ctx: Context) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser().resolve()
    return ctx.workspace.adapters / (cfg.run_name or preset)


def last_checkpoint(checkpoints: Path) -> Path | None:
    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return found[-1] if found else None


def check_run_dir(cfg: SFTConfig, run_dir: Path, *, prefix: str = "") -> Path | None:
    """The last checkpoint in ``run_dir`` (None: none). Refuses resume=true without one, and an earlier run's
    checkpoints unless resume or overwrite says what to do with them. ``prefix`` is how the caller's overrides
    spell the SFT keys (``sft.`` in a distillation config)."""
    checkpoints = run_dir / "checkpoints"
    resume_from = last_checkpoint(checkpoints) if checkpoints.is_dir() else None
    if cfg.resume and resume_from is None:
        raise ConfigError(
            f"{prefix}resume=true but {checkpoints} has no checkpoint", hint=f"drop {prefix}resume=true to start fresh"
        )
    if resume_from is not None and not cfg.resume and not cfg.overwrite:
        raise ConfigError(
            f"{run_dir} already has checkpoints ({resume_from.name})",
            hint=f"{prefix}resume=true to continue, {prefix}overwrite=true to start over, or {prefix}run_name=NEW",
        )
    return resume_from


def run_sft(cfg: SFTConfig, *, preset: str, ctx: Context, console=None, kind: str = "sft") -> dict:
    """Train, keep the best checkpoint, save it with a summary; returns the summary. The run is tracked as
    ``kind`` (``ctx.tracker``): config, loss curve, final figures and summary; the summary's ``tracking`` says
    where (the registry's lineage keeps it)."""
    transformers = require("transformers", "train")
    trl = require("trl", "train")
    datasets = require("datasets", "train")

    # setup ------------------------------------------------------------------------------------
    run_dir = output_dir(cfg, preset, ctx)
    check_publishable(cfg, preset=preset, run_dir=run_dir, ctx=ctx)
    resume_from = start_run_dir(cfg, run_dir)
    transformers.set_seed(cfg.seed)
    base_path = resolve_base_model(cfg.base_model, ctx)
    dataset_dir = resolve_dataset(cfg.dataset, ctx.workspace.datasets)
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    tokenizer = load_tokenizer(base_path, cfg)
    train_rows, train_long = tokenize_split(tokenizer, dataset_dir / "train.jsonl", cfg, cfg.max_train_examples)
    eval_rows, eval_long = tokenize_split(tokenizer, dataset_dir / "validation.jsonl", cfg, cfg.max_eval_examples)
    model = load_model(base_path, cfg)
    dataset = dataset_lineage(dataset_dir, manifest)
    tags = training_tags(cfg.base_model, dataset, method=cfg.method, preset=preset, resumed_from=resume_from)
    with ctx.tracker.start_run(kind=kind, name=run_dir.name, params=cfg.model_dump(), tags=tags) as tracked:
        callbacks = sft_callbacks(cfg, run_dir, console=console, tracked=tracked)
        trainer = trl.SFTTrainer(
            model=model,
            args=trl_args(cfg, run_dir / "checkpoints"),
            train_dataset=datasets.Dataset.from_list(train_rows),
            eval_dataset=datasets.Dataset.from_list(eval_rows),
            processing_class=tokenizer,
            callbacks=callbacks,
        )

        # train --------------------------------------------------------------------------------
        outcome = train_and_evaluate(trainer, resume_from)

        # save ---------------------------------------------------------------------------------
        final_dir = run_dir / ("model" if cfg.method == "full" else "adapter")
        trainer.model.save_pretrained(str(final_dir))
        tokenizer.save_pretrained(str(final_dir))
        summary = {
            "run_dir": str(run_dir),
            "artifact": str(final_dir),
            "method": cfg.method,
            "base_model": cfg.base_model,
            "base_model_path": str(base_path),
            "dataset": dataset,
            "config": cfg.model_dump(),
            "preset": preset,
            "resumed_from": resume_from.name if resume_from else None,
            "train_examples": len(train_rows),
            "eval_examples": len(eval_rows),
            "too_long_dropped": {"train": train_long, "validation": eval_long},
            **outcome,
            "tracking": tracked.lineage(),
        }
        tracked.log_metrics({k: v for k, v in outcome.items() if k != "eval_curve"})
        tracked.log_dict(summary, "training_summary.json")
        (run_dir / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str))

    # cleanup ----------------------------------------------------------------------------------
    del trainer, model
    return summary


def training_tags(base_model: str, dataset: dict, **more: object) -> dict:
    """The tags a training run is found by: its base model, dataset (name, version, manifest hash) and ``more``
    (``Path`` values by their name)."""
    tags = {"helpline.base_model": base_model, "helpline.dataset": f"{dataset['name']} {dataset['version']}",
            "helpline.dataset_hash": dataset["hash"]}  # fmt: skip
    return tags | {f"helpline.{k}": (v.name if isinstance(v, Path) else v) for k, v in more.items()}


def check_publishable(cfg: SFTConfig, *, preset: str, run_dir: Path, ctx: Context) -> None:
    """Refuse before training what would be refused after it: a run folder that holds a registered model's
    weights (training there would change them in place, under a name that aliases and gate verdicts refer
    to), and a registry name the finished run cannot take (its exported adapter's, or its full fine-tune's)."""
    held = [m.name for m in ctx.registry.list_models() if Path(m.path).resolve().is_relative_to(run_dir.resolve())]
    if held:
        raise ConfigError(
            f"{run_dir} holds the weights of registered model {', '.join(held)}; a run there would overwrite them",
            hint="train into a new folder: run_name=NEW (or output_dir=NEW)",
        )
    if cfg.export:
        check_export_names(cfg.adapter_name or run_dir.name, merge=False, ctx=ctx)
    if cfg.method == "full":
        ctx.registry.check_name_free(full_model_name(cfg, preset))


def full_model_name(cfg: SFTConfig, preset: str) -> str:
    """The registry name of a full fine-tune."""
    return cfg.model_name or cfg.run_name or preset


def start_run_dir(cfg: SFTConfig, run_dir: Path) -> Path | None:
    """Create ``run_dir`` (emptied first when ``overwrite`` replaces an earlier run); the checkpoint to resume from."""
    resume_from = check_run_dir(cfg, run_dir)
    if resume_from is not None and not cfg.resume:  # overwrite=true
        shutil.rmtree(run_dir)
        resume_from = None
    run_dir.mkdir(parents=True, exist_ok=True)
    return resume_from


def sft_callbacks(cfg: SFTConfig, run_dir: Path, *, console=None, tracked=None) -> list:
    """metrics.jsonl (started afresh unless resuming), the tracked run's curves, early stopping if configured,
    and the resume fix-up."""
    transformers = require("transformers", "train")
    metrics_path = run_dir / "metrics.jsonl"
    if not cfg.resume:
        metrics_path.unlink(missing_ok=True)
    callbacks = [metrics_file(metrics_path, console=console)]
    if tracked is not None:
        callbacks.append(tracking(tracked))
    if cfg.early_stopping_patience is not None:
        callbacks.append(transformers.EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
    callbacks.append(resume_with_new_callbacks(callbacks))
    return callbacks


def train_and_evaluate(trainer, resume_from: Path | None) -> dict:
    """Train (from ``resume_from`` if given), evaluate the best checkpoint; the figures the summary keeps."""
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - started
    final_eval = trainer.evaluate()  # the best checkpoint is loaded at the end
    history = trainer.state.log_history
    return {
        "global_step": trainer.state.global_step,
        "train_seconds_this_session": round(train_seconds, 1),
        "train_loss": result.training_loss,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_eval_loss": trainer.state.best_metric,
        "final_eval_loss": final_eval.get("eval_loss"),
        "eval_curve": [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in history if "eval_loss" in h],
    }


def dataset_lineage(dataset_dir: Path, manifest: dict) -> dict:
    """The prepared dataset a run trained on: its folder, name, version and content hash."""
    return {
        "path": str(dataset_dir),
        "name": manifest["name"],
        "version": manifest["version"],
        "hash": manifest["dataset_hash"],
    }


def register_full_model(summary: dict, cfg: SFTConfig, *, preset: str, ctx: Context) -> dict:
    """Register a full fine-tune's saved model as a base model, with its lineage; adapters go through the
    export gate instead."""
    name = full_model_name(cfg, preset)
    chat = is_chat_model(cfg.base_model, ctx)
    kept = ("base_model", "dataset", "global_step", "best_eval_loss", "run_dir", "tracking")
    lineage = {k: summary.get(k) for k in kept}
    record = ctx.registry.register_model(
        name,
        kind="base",
        path=summary["artifact"],
        metadata={"description": f"{cfg.base_model} fully fine-tuned on {summary['dataset']['name']}", "chat": chat,
                  "training": {**lineage, "method": "full", "config": cfg.model_dump()}},
    )  # fmt: skip
    return {"name": record.name, "path": record.path}


def publish_run(summary: dict, cfg: SFTConfig, *, preset: str, ctx: Context, console=None) -> dict:
    """What a finished run becomes: an adapter through the export gate (``export``), or a full fine-tune
    registered as a base model. Returns ``{"export": ...}``, ``{"registered": ...}`` or nothing."""
    out: dict = {}
    if cfg.export:
        out["export"] = export_adapter(Path(summary["run_dir"]), ctx=ctx, name=cfg.adapter_name, console=console)
    if cfg.method == "full":
        out["registered"] = register_full_model(summary, cfg, preset=preset, ctx=ctx)
    return out

