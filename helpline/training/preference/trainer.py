"""The preference recipe: one linear script on TRL's DPOTrainer (or ORPOTrainer) and PEFT.
setup → train → save → cleanup.

    helpline train preference --config smollm2-135m-dpo-cpu --pairs pairs.jsonl [--init-adapter production]

The adapter trained is either a fresh LoRA or ``init_adapter``, loaded with
``PeftModel.from_pretrained(..., is_trainable=True)`` and trained further.

The DPO reference. Handed a PEFT model and no ``ref_model``, TRL 1.16's DPOTrainer copies the model's
"default" adapter into a frozen adapter named "ref" and computes the reference log-probabilities with
"ref" active (``use_adapter``; with ``precompute_ref_log_probs`` once, before training). So the reference
is the starting adapter: the init adapter when continuing one, and for a fresh adapter (LoRA B = 0) the
base model itself. That is the right reference for continued training: DPO keeps the policy near the
model that produced the pairs' context (production), not near the untuned base. Passing ``peft_config``
instead would use the adapter-disabled base as the reference, which is wrong for an init adapter, so the
recipe always builds the PEFT model itself. Only "default" is saved; "ref" never leaves the process.

ORPO (``trl.experimental.orpo`` in TRL 1.16) needs no reference: NLL on the chosen answer plus
``beta`` times an odds-ratio term.

The output folder has the layout of `train sft`'s (``adapter/`` with adapter_config.json, safetensors
and the tokenizer; ``training_summary.json`` with the lineage the export gate and the registry read;
``metrics.jsonl``), so `helpline train export RUN_DIR` accepts it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, DataError
from helpline.platform.lazy_imports import require
from helpline.training.preference.config import PreferenceConfig
from helpline.training.preference.pairs import fits, pairs_lineage, read_pairs
from helpline.training.preference.scoring import preference_accuracy
from helpline.training.sft.callbacks import metrics_file, tracking
from helpline.training.sft.trainer import check_publishable, load_tokenizer, resolve_base_model, training_tags

LOGGED = ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "nll_loss")


def train_preference(
    cfg: PreferenceConfig,
    pairs_path: str | Path,
    *,
    ctx: Context,
    preset: str = "preference",
    eval_pairs_path: str | Path | None = None,
    console=None,
) -> dict:
    """Train the adapter on the pairs of ``pairs_path``, save it with its summary; returns the summary.
    With ``eval_pairs_path``, the share of held-out pairs whose chosen answer the model prefers is measured
    before and after training."""
    transformers = require("transformers", "train")

    # setup ------------------------------------------------------------------------------------
    run_dir = output_dir(cfg, preset, ctx)
    pairs = read_pairs(pairs_path)
    eval_pairs = read_pairs(eval_pairs_path) if eval_pairs_path else []
    base_path = resolve_base_model(cfg.base_model, ctx)
    init = resolve_init_adapter(cfg.init_adapter, base_path=base_path, ctx=ctx) if cfg.init_adapter else None
    check_publishable(cfg, preset=preset, run_dir=run_dir, ctx=ctx)  # type: ignore[arg-type]
    start_run_dir(cfg, run_dir, init=init)
    transformers.set_seed(cfg.seed)
    tokenizer = load_tokenizer(base_path, cfg)  # type: ignore[arg-type]
    rows = [p for p in pairs if fits(tokenizer, p, cfg.max_length)]
    eval_rows = [p for p in eval_pairs if fits(tokenizer, p, cfg.max_length)]
    if not rows:
        raise DataError(f"no pair of {pairs_path} fits max_length={cfg.max_length}", hint="raise max_length")
    model = load_policy(base_path, init, cfg)
    dataset = pairs_lineage(pairs_path, len(pairs))
    tags = training_tags(cfg.base_model, dataset, method=cfg.method, preset=preset, init_adapter=cfg.init_adapter)
    with ctx.tracker.start_run(kind="preference", name=run_dir.name, params=cfg.model_dump(), tags=tags) as tracked:
        before = preference_accuracy(model, tokenizer, eval_rows) if eval_rows else None
        trainer = build_trainer(cfg, model, tokenizer, rows, run_dir, console=console, tracked=tracked)

        # train --------------------------------------------------------------------------------
        started = time.perf_counter()
        result = trainer.train()
        train_seconds = time.perf_counter() - started

        # save ---------------------------------------------------------------------------------
        final_dir = run_dir / "adapter"
        trainer.model.save_pretrained(str(final_dir), selected_adapters=["default"])
        tokenizer.save_pretrained(str(final_dir))
        after = preference_accuracy(trainer.model, tokenizer, eval_rows) if eval_rows else None
        summary = {
            "run_dir": str(run_dir),
            "artifact": str(final_dir),
            "method": cfg.method,
            "base_model": cfg.base_model,
            "base_model_path": str(base_path),
            "init_adapter": adapter_lineage(init, cfg.init_adapter) if init else None,
            "dataset": dataset,
            "eval_dataset": pairs_lineage(eval_pairs_path, len(eval_pairs)) if eval_pairs_path else None,
            "config": cfg.model_dump(),
            "preset": preset,
            "train_pairs": len(rows),
            "too_long_dropped": {"train": len(pairs) - len(rows), "eval": len(eval_pairs) - len(eval_rows)},
            "global_step": trainer.state.global_step,
            "train_seconds": round(train_seconds, 1),
            "train_loss": result.training_loss,
            "best_eval_loss": None,  # read by the export gate's lineage; preference runs are judged by `eval`
            "final_eval_loss": None,
            "log": [{k: h[k] for k in ("step", *LOGGED) if k in h} for h in trainer.state.log_history if "loss" in h],
            "eval": {"before": before, "after": after} if eval_rows else None,
            "tracking": tracked.lineage(),
        }
        figures = {k: summary[k] for k in ("global_step", "train_seconds", "train_loss")}
        tracked.log_metrics({**figures, "eval": summary["eval"] or {}})
        tracked.log_dict(summary, "training_summary.json")
        (run_dir / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str))

    # cleanup ----------------------------------------------------------------------------------
    del trainer, model
    return summary


def output_dir(cfg: PreferenceConfig, preset: str, ctx: Context) -> Path:
    """``output_dir``, else ``<workspace>/adapters/<run_name or preset>``."""
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser().resolve()
    return ctx.workspace.adapters / (cfg.run_name or preset)


def start_run_dir(cfg: PreferenceConfig, run_dir: Path, *, init: Path | None) -> None:
    """Create ``run_dir``. An earlier run there is replaced only with ``overwrite``, and never when it holds the
    adapter this run starts from (emptying the folder would delete it before it is loaded)."""
    if init is not None and init.resolve().is_relative_to(run_dir.resolve()):
        raise ConfigError(
            f"the init adapter {init} lies inside the output folder {run_dir}",
            hint="train into a new folder: run_name=NEW (or output_dir=NEW)",
        )
    earlier = [p.name for p in (run_dir / "adapter", run_dir / "training_summary.json") if p.exists()]
    if earlier and not cfg.overwrite:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(earlier)})",
            hint="overwrite=true to replace it, or run_name=NEW",
        )
    if earlier:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def resolve_init_adapter(name_or_path: str, *, base_path: Path, ctx: Context) -> Path:
    """The folder of the adapter to continue: an adapter folder, a training run folder (its ``adapter/``), or a
    registry name/alias of an adapter on the same base model."""
    path = Path(name_or_path).expanduser()
    for folder in (path, path / "adapter"):
        if (folder / "adapter_config.json").is_file():
            return folder.resolve()
    if path.exists():
        raise ConfigError(f"{path} holds no adapter_config.json", hint="pass a LoRA adapter folder or a run folder")
    record = ctx.registry.chat_model(name_or_path)
    if record.kind != "adapter":
        raise ConfigError(
            f"{name_or_path!r} is the base model {record.name}, not an adapter",
            hint="drop init_adapter (or --init-adapter) to train a fresh adapter on it",
        )
    if record.base_model and resolve_base_model(record.base_model, ctx).resolve() != base_path.resolve():
        raise ConfigError(
            f"adapter {record.name} was trained on {record.base_model}, not on {base_path}",
            hint=f"set base_model={record.base_model}",
        )
    return Path(record.path).resolve()


def adapter_lineage(folder: Path, named: str | None) -> dict:
    """The adapter a run started from: as named, its folder and the hash of its weights."""
    weights = folder / "adapter_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
    return {"name": named, "path": str(folder), "hash": digest}


def use_4bit(cfg: PreferenceConfig) -> bool:
    """``quantization`` decided: ``auto`` is 4-bit where torch sees a CUDA GPU."""
    if cfg.quantization == "auto":
        return bool(require("torch", "train").cuda.is_available())
    return cfg.quantization == "4bit"


def load_policy(base_path: Path, init: Path | None, cfg: PreferenceConfig):
    """The base model (4-bit or not) with a trainable adapter: ``init`` continued, or a fresh LoRA."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    peft = require("peft", "train")
    kwargs: dict = {"dtype": torch.bfloat16 if cfg.bf16 else torch.float32}
    four_bit = use_4bit(cfg)
    if four_bit:
        require("bitsandbytes", "train")
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, cfg.compute_dtype),
        )
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_path), **kwargs)
    if four_bit:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if init is not None:
        return peft.PeftModel.from_pretrained(model, str(init), is_trainable=True)
    lora = peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return peft.get_peft_model(model, lora)


def build_trainer(
    cfg: PreferenceConfig, model, tokenizer, rows: list[dict], run_dir: Path, *, console=None, tracked=None
):
    """TRL's DPOTrainer or ORPOTrainer over ``model`` (a PEFT model, see the module docstring for the
    reference), logging to ``run_dir/metrics.jsonl`` and to the ``tracked`` run."""
    datasets = require("datasets", "train")
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    common = dict(
        output_dir=str(run_dir / "checkpoints"),
        max_length=cfg.max_length,
        beta=cfg.beta,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",  # short runs: the adapter is saved once, at the end
        report_to=[],
        bf16=cfg.bf16,  # explicit: TRL's configs default to bf16 when fp16 is off
        gradient_checkpointing=cfg.gradient_checkpointing,
        dataloader_num_workers=0,
    )
    kwargs = dict(
        model=model,
        processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list(rows),
        callbacks=[metrics_file(metrics_path, console=console), *([tracking(tracked)] if tracked else [])],
    )
    if cfg.method == "dpo":
        trl = require("trl", "train")
        args = trl.DPOConfig(**common, precompute_ref_log_probs=cfg.precompute_ref_log_probs)
        return trl.DPOTrainer(args=args, **kwargs)
    orpo = require("trl.experimental.orpo", "train")
    return orpo.ORPOTrainer(args=orpo.ORPOConfig(**common, remove_unused_columns=False), **kwargs)
