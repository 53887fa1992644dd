"""Fine-tune the hallucination detector: MiniLM as a cross-encoder on HaluEval (+ doc2dial pairs).

One linear recipe: setup -> build pairs (items split before pairing) -> train -> save ->
calibrate the threshold on the validation split -> register. The preset in
``helpline/evaluation/recipes/detector.yaml`` records the exact command that runs it.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from helpline.datasets.halueval import (
    Pair,
    both_pairs,
    doc2dial_pairs,
    protocol_pairs,
    read_halueval,
    split_items,
)
from helpline.guard.detector import CROSS_ENCODER, hypothesis
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.files import read_yaml_mapping, yaml_value
from helpline.platform.lazy_imports import require
from helpline.platform.tracking import TrackedRun
from helpline.training.detector.calibration import fit_detector


class DetectorTrainConfig(BaseModel):
    """Settings of one detector training run."""

    base_model: str = Field("all-minilm-l6-v2", description="Registry name or folder of the encoder to start from.")
    output_name: str = Field("helpline-detector", description="Name under workspace/models and in the registry.")
    halueval_dir: Path = Field(Path("../shared/data/halueval"), description="Folder with qa_data/dialogue_data.")
    doc2dial_dir: Path | None = Field(None, description="doc2dial folder for passage-level pairs (optional).")
    qa_items: int = Field(2000, ge=0, description="QA training items (each gives a right and a hallucinated pair).")
    dialogue_items: int = Field(2000, ge=0, description="Dialogue training items.")
    doc2dial_pairs: int = Field(600, ge=0, description="doc2dial training pairs (documents of the train split).")
    val_items: int = Field(400, ge=10, description="Validation items per kind used to calibrate the threshold.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training pairs (fractions allowed).")
    batch_size: int = Field(16, ge=1, description="Pairs per optimiser step.")
    learning_rate: float = Field(4e-5, gt=0, description="Peak AdamW learning rate.")
    warmup_ratio: float = Field(0.06, ge=0, le=0.5, description="Share of steps with linear warm-up.")
    max_length: int = Field(128, ge=32, le=512, description="Tokens per (passage, answer) pair; passages are cut.")
    question_dropout: float = Field(0.2, ge=0, le=1, description="Share of pairs trained without the question.")
    max_minutes: float = Field(20.0, gt=0, description="Wall-time budget; the learning rate anneals to 0 by then.")
    train_cross_encoder: bool = Field(True, description="Fine-tune the cross-encoder (else support features only).")
    cross_encoder_from: Path | None = Field(None, description="Reuse an already fine-tuned cross-encoder folder.")
    freeze_embeddings: bool = Field(True, description="Keep the word embeddings fixed (half the weights; faster).")
    threads: int = Field(2, ge=1, description="torch CPU threads.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="Where the cross-encoder trains.")
    seed: int = Field(13, description="Shuffling, dropout and sampling seed.")


def load_config(path: str | Path | None, overrides: list[str]) -> DetectorTrainConfig:
    """YAML preset + ``key=value`` overrides, validated (every problem reported at once)."""
    hint = "start from helpline/evaluation/recipes/detector.yaml"
    data: dict[str, Any] = read_yaml_mapping(path, what="detector config", hint=hint) if path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value", hint="e.g. qa_items=500")
        data[key] = yaml_value(key, value)
    try:
        return DetectorTrainConfig(**data)
    except ValidationError as e:
        raise ConfigError(f"invalid detector config: {e}", hint="see `helpline eval train-detector --help`") from e


def build_training_pairs(cfg: DetectorTrainConfig) -> tuple[list[Pair], dict[str, list[Pair]]]:
    """Training pairs (both answers of each train item) and validation pairs (official protocol)."""
    rng = random.Random(cfg.seed)
    train: list[Pair] = []
    val: dict[str, list[Pair]] = {}
    for kind, n in (("qa", cfg.qa_items), ("dialogue", cfg.dialogue_items)):
        items = read_halueval(cfg.halueval_dir / f"{kind}_data.jsonl", kind)  # type: ignore[arg-type]
        pool = split_items(items, "train")
        rng.shuffle(pool)
        train += both_pairs(pool[:n])
        val[kind] = protocol_pairs(split_items(items, "val")[: cfg.val_items])
    if cfg.doc2dial_dir and cfg.doc2dial_pairs:
        pool = doc2dial_pairs(cfg.doc2dial_dir, "train", seed=cfg.seed)
        rng.shuffle(pool)
        train += pool[: cfg.doc2dial_pairs]
        val["doc2dial"] = doc2dial_pairs(cfg.doc2dial_dir, "val")[: cfg.val_items]
    rng.shuffle(train)
    return train, val


def train_cross_encoder(
    cfg: DetectorTrainConfig,
    *,
    base_path: Path,
    output: Path,
    log: Callable[[str], None] = print,
    tracked: TrackedRun | None = None,
) -> dict[str, Any]:
    """Fine-tune MiniLM as a cross-encoder and save it (HF format) to ``output``; the loss curve goes to
    ``tracked`` where it is logged."""
    torch = require("torch", "eval")
    transformers = require("transformers", "eval")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = training_device(cfg.device, torch)
    rng = random.Random(cfg.seed)

    # setup
    train_pairs, _ = build_training_pairs(cfg)
    tokenizer, model = load_encoder_for_training(base_path, cfg, device, transformers)
    steps = math.ceil(len(train_pairs) * cfg.epochs / cfg.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    log(f"training on {len(train_pairs)} pairs, {steps} steps of {cfg.batch_size} ({device})")

    # train
    model.train()
    start, losses = time.time(), []
    for step in range(steps):
        batch = [train_pairs[(step * cfg.batch_size + i) % len(train_pairs)] for i in range(cfg.batch_size)]
        loss = batch_loss(model, tokenizer, batch, cfg, rng=rng, device=device, torch=torch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        # Progress is whichever is further along, steps or the time budget, so the learning rate
        # still anneals to zero when a busy machine makes the run stop early.
        progress = max(step / steps, (time.time() - start) / (cfg.max_minutes * 60))
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate * _lr_factor(progress, cfg.warmup_ratio)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            elapsed = time.time() - start
            running = sum(losses[-25:]) / len(losses[-25:])
            log(f"step {step + 1}/{steps} loss {running:.4f} {elapsed / 60:.1f} min")
            if tracked is not None:
                tracked.log_metrics({"loss": running, "learning_rate": optimizer.param_groups[0]["lr"]}, step=step + 1)
        if progress >= 1.0:
            log(f"stopping at step {step + 1}: max_minutes={cfg.max_minutes} reached")
            break

    # save
    save_cross_encoder(model, tokenizer, output)
    return {
        "base_model": str(base_path),
        "device": str(device),
        "train_pairs": len(train_pairs),
        "steps_done": len(losses),
        "pairs_seen": len(losses) * cfg.batch_size,
        "train_minutes": round((time.time() - start) / 60, 2),
        "final_loss": round(sum(losses[-25:]) / max(1, len(losses[-25:])), 4),
    }


def load_encoder_for_training(
    base_path: Path, cfg: DetectorTrainConfig, device: Any, transformers: Any
) -> tuple[Any, Any]:
    """The encoder's tokenizer, and the encoder with a one-logit head on ``device`` (embeddings frozen if asked)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base_path))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(base_path), num_labels=1).to(device)
    if cfg.freeze_embeddings:
        model.base_model.embeddings.requires_grad_(False)
    return tokenizer, model


def batch_loss(
    model: Any, tokenizer: Any, batch: list[Pair], cfg: DetectorTrainConfig, *, rng: random.Random, device: Any,
    torch: Any,
) -> Any:  # fmt: skip
    """Binary cross-entropy of the (passage, answer) pairs; ``question_dropout`` of them without the question."""
    enc = tokenizer(
        [b.passages[0] for b in batch],
        [hypothesis(b.answer, None if rng.random() < cfg.question_dropout else b.question) for b in batch],
        truncation="longest_first",
        max_length=cfg.max_length,
        padding=True,
        return_tensors="pt",
    ).to(device)
    labels = torch.tensor([float(b.label) for b in batch], device=device)
    return torch.nn.functional.binary_cross_entropy_with_logits(model(**enc).logits[:, 0], labels)


def save_cross_encoder(model: Any, tokenizer: Any, output: Path) -> None:
    """Save the model (moved to the CPU, in eval mode) and its tokenizer to ``output`` in HF format."""
    output.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.to("cpu").save_pretrained(str(output))
    tokenizer.save_pretrained(str(output))


def training_device(name: str, torch: Any) -> Any:
    """``auto`` is the first CUDA GPU when torch sees one, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name} but torch sees no CUDA GPU",
            hint="train on the CPU with device=cpu (helpline/evaluation/recipes/detector.yaml is the CPU recipe), "
            "or install a CUDA build of torch",
        )
    return torch.device(name)


def _lr_factor(progress: float, warmup: float) -> float:
    if progress < warmup:
        return max(progress / warmup, 0.02)
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


def train_and_register(
    ctx: Context, cfg: DetectorTrainConfig, *, base_path: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """:func:`train` as a tracked run (``ctx.tracker``), then registered as ``cfg.output_name`` (replacing the
    detector of that name: a detector is never aliased nor gated) with the run in its lineage."""
    output = ctx.workspace.models / cfg.output_name
    tags = {"helpline.base_model": str(base_path), "helpline.dataset": str(cfg.halueval_dir)}
    with ctx.tracker.start_run(kind="detector", name=cfg.output_name, params=cfg.model_dump(), tags=tags) as tracked:
        metadata = train(cfg, base_path=base_path, output=output, log=log, tracked=tracked)
        tracked.log_metrics(metadata)
        tracked.log_dict(metadata, "detector_report.json")
        metadata = {**metadata, "tracking": tracked.lineage()}
    ctx.registry.register_model(cfg.output_name, kind="detector", path=output, metadata=metadata, replace=True)
    return metadata


def train(
    cfg: DetectorTrainConfig,
    *,
    base_path: Path,
    output: Path,
    log: Callable[[str], None] = print,
    tracked: TrackedRun | None = None,
) -> dict[str, Any]:
    """The whole recipe: cross-encoder (optional) -> style model -> heads -> thresholds -> save.

    It is built in ``<output>.partial`` and moved into place only when complete, so a run that fails
    or is stopped leaves a detector already at ``output`` as it was (and can reuse its cross-encoder).
    """

    if cfg.cross_encoder_from and not (cfg.cross_encoder_from / "config.json").is_file():
        raise NotFoundError(
            f"cross_encoder_from={cfg.cross_encoder_from} is not a saved cross-encoder (no config.json)",
            hint="point it at the cross_encoder folder of a trained detector, e.g. .helpline/models/NAME/cross_encoder",
        )
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        ce_dir = partial / CROSS_ENCODER
        ce_meta: dict[str, Any] = {}
        if cfg.cross_encoder_from:
            shutil.copytree(cfg.cross_encoder_from, ce_dir)
            ce_meta = {"reused": str(cfg.cross_encoder_from)}
        elif cfg.train_cross_encoder:
            ce_meta = train_cross_encoder(cfg, base_path=base_path, output=ce_dir, log=log, tracked=tracked)
        report = fit_detector(cfg, partial, log=log)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(output, ignore_errors=True)
    partial.rename(output)
    return {"cross_encoder": ce_meta, **report}
