"""Depth pruning: drop the decoder layers a model needs least, as a new base model the recipes train.

    helpline train prune --model smollm2-135m-instruct --layers 16 --dataset grounded-smol \
        --name smollm2-135m-pruned16

Why depth: answering one customer on a CPU, a decoder pays a fixed cost per layer per token, so a deep
narrow model (SmolLM2-135M: 30 layers of 576) is barely faster than a shallow wide one twice its size
(Gemma-3-270M: 18 layers of 640). Removing layers is what makes a student faster at one stream.

Which layers (``method``), measured on calibration conversations rendered with the model's own chat
template, over every token that is not padding:

- ``block`` (default): the contiguous block of layers whose removal changes the residual stream least,
  the mean angular distance ``arccos(cos(h_l, h_{l+n})) / pi`` between the stream entering layer ``l``
  and the one leaving layer ``l+n-1`` (Gromov et al., 2024, "The Unreasonable Ineffectiveness of the
  Deeper Layers"). It accounts for what the removed layers do together.
- ``layers``: the individual layers of lowest block influence ``1 - cos(h_in, h_out)`` (ShortGPT,
  Men et al., 2024), scored one at a time.
- ``loss``: the layers whose removal, one at a time, raises the calibration loss least (the perplexity
  criterion of Kim et al., 2024, "Shortened LLaMA"). One forward pass over the calibration texts per
  layer, so the slowest; on SmolLM2-135M it also damages the model least (see the preset of the heal).

The first and the last layer are always kept. The pruned model is worse until it is healed by
training (``helpline/training/configs/smollm2-pruned-heal-cpu.yaml``); the report gives the
calibration loss before and after pruning so the damage is visible before any training is spent.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, DataError
from helpline.platform.lazy_imports import require
from helpline.training.data.prepare import resolve_dataset
from helpline.training.sft.trainer import is_chat_model, resolve_base_model

Method = Literal["block", "layers", "loss"]


@dataclass
class LayerScores:
    """What calibration measured: per-layer influence and, for the requested depth, each block's distance."""

    influence: list[float]  # 1 - cos(input, output) of each layer
    block_distance: dict[int, float] = field(default_factory=dict)  # start layer -> angular distance
    removal_loss: dict[int, float] = field(default_factory=dict)  # layer -> calibration loss without it
    tokens: int = 0


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder layers of a causal LM (Llama, Gemma 3, Qwen, Mistral style)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ConfigError(
            f"cannot find the decoder layers of {type(model).__name__}",
            hint="depth pruning supports decoder-only models whose layers are model.model.layers (Llama, Gemma, Qwen)",
        )
    return layers


def calibration_texts(dataset_dir: Path, tokenizer: Any, *, split: str, limit: int) -> list[str]:
    """Conversations of a prepared dataset's split, rendered with the tokenizer's chat template."""
    file = dataset_dir / f"{split}.jsonl"
    if not file.is_file():
        raise DataError(f"{file} does not exist", hint="prepare the dataset again with `helpline data prepare`")
    texts = []
    with file.open(encoding="utf-8") as fh:
        for line in fh:
            if len(texts) >= limit:
                break
            texts.append(tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False))
    if not texts:
        raise DataError(f"{file} has no conversations", hint="prepare a dataset with more rows")
    return texts


def _batches(tokenizer: Any, texts: list[str], *, max_length: int, batch_size: int):
    for i in range(0, len(texts), batch_size):
        yield tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, add_special_tokens=False)  # fmt: skip


def score_layers(model: Any, tokenizer: Any, texts: list[str], *, drop: int, max_length: int = 512,
                 batch_size: int = 4) -> LayerScores:  # fmt: skip
    """Record the residual stream entering every layer (and leaving the last) on ``texts``; return each
    layer's influence and, for blocks of ``drop`` layers, each block's angular distance."""
    torch = require("torch", "train")
    layers = decoder_layers(model)
    n_layers = len(layers)
    streams: list[Any] = [None] * (n_layers + 1)

    def recorder(i: int):
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            streams[i] = args[0] if args else kwargs["hidden_states"]
            if i == n_layers - 1:
                streams[n_layers] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [layer.register_forward_hook(recorder(i), with_kwargs=True) for i, layer in enumerate(layers)]
    starts = range(1, n_layers - drop)  # keep the first layer and the last
    influence = torch.zeros(n_layers, dtype=torch.float64)
    distance = torch.zeros(len(starts), dtype=torch.float64)
    tokens = 0
    model.eval()
    try:
        with torch.no_grad():
            for batch in _batches(tokenizer, texts, max_length=max_length, batch_size=batch_size):
                model(**batch)
                mask = batch["attention_mask"].bool()
                flat = [s[mask].double() for s in streams]  # (tokens, hidden) for each point of the stream
                cos = torch.nn.functional.cosine_similarity
                for i in range(n_layers):
                    influence[i] += (1 - cos(flat[i], flat[i + 1], dim=-1)).sum()
                for j, start in enumerate(starts):
                    c = cos(flat[start], flat[start + drop], dim=-1).clamp(-1, 1)
                    distance[j] += (torch.arccos(c) / math.pi).sum()
                tokens += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    if tokens == 0:
        raise DataError("the calibration texts have no tokens", hint="use a dataset with non-empty conversations")
    return LayerScores(
        influence=[round(float(x) / tokens, 6) for x in influence],
        block_distance={start: round(float(distance[j]) / tokens, 6) for j, start in enumerate(starts)},
        tokens=tokens,
    )


def removal_losses(model: Any, tokenizer: Any, texts: list[str], *, max_length: int = 512,
                   batch_size: int = 4) -> dict[int, float]:  # fmt: skip
    """The calibration loss of the model without each inner layer in turn (first and last always kept)."""
    torch = require("torch", "train")
    full = list(decoder_layers(model))
    out = {}
    try:
        for i in range(1, len(full) - 1):
            model.model.layers = torch.nn.ModuleList(full[:i] + full[i + 1 :])
            out[i] = calibration_loss(model, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    finally:
        model.model.layers = torch.nn.ModuleList(full)
    return out


def choose_dropped(scores: LayerScores, drop: int, method: Method) -> list[int]:
    """The layers to remove: the block of least angular distance, or the least influential layers (by
    influence, or by the loss without each)."""
    n_layers = len(scores.influence)
    if method == "block":
        start = min(scores.block_distance, key=lambda s: (scores.block_distance[s], -s))
        return list(range(start, start + drop))
    if method == "loss":
        if not scores.removal_loss:
            raise ConfigError("method loss needs removal_loss scores", hint="compute them with removal_losses()")
        return sorted(sorted(scores.removal_loss, key=lambda i: (scores.removal_loss[i], -i))[:drop])
    inner = sorted(range(1, n_layers - 1), key=lambda i: (scores.influence[i], -i))
    return sorted(inner[:drop])


def remove_layers(model: Any, dropped: list[int]) -> Any:
    """``model`` without the ``dropped`` decoder layers, its config and per-layer attributes to match."""
    torch = require("torch", "train")
    layers = decoder_layers(model)
    keep = [i for i in range(len(layers)) if i not in set(dropped)]
    model.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new_index, layer in enumerate(model.model.layers):
        attention = getattr(layer, "self_attn", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = new_index  # the KV cache is indexed by position in the stack
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_index
    config = model.config
    config.num_hidden_layers = len(keep)
    # Per-layer lists (Gemma 3's sliding/full attention pattern) must follow the layers they describe.
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    return model


def calibration_loss(model: Any, tokenizer: Any, texts: list[str], *, max_length: int = 512,
                     batch_size: int = 4) -> float:  # fmt: skip
    """Mean next-token loss over every non-padding token of ``texts`` (lower is better)."""
    torch = require("torch", "train")
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for batch in _batches(tokenizer, texts, max_length=max_length, batch_size=batch_size):
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(**batch, labels=labels, use_cache=False).loss) * n
            count += n
    return round(total / max(count, 1), 4)


@dataclass
class PruneOptions:
    model: str
    layers: int  # layers kept
    dataset: str
    name: str
    method: Method = "block"
    samples: int = 64
    max_length: int = 512
    force: bool = False


@dataclass
class PruneSetup:
    """What a pruning run works on: the source model (loaded in fp32), where it goes and its calibration texts."""

    source: Path
    target: Path
    dataset_dir: Path
    tokenizer: Any
    model: Any
    n_layers: int
    drop: int  # layers removed
    scoring: list[str]  # texts the layers are scored on
    held_out: list[str]  # texts the loss before and after is measured on


@dataclass
class Pruning:
    """What pruning did: the layer scores, the layers dropped and the held-out loss before and after."""

    scores: LayerScores
    dropped: list[int]
    loss_before: float
    loss_after: float


def run_prune(opts: PruneOptions, *, ctx: Context, console: Any = None) -> dict:
    """Score, remove, save under ``<workspace>/models/NAME`` and register it as a base model with its lineage."""
    # setup ------------------------------------------------------------------------------------
    setup = set_up_pruning(opts, ctx)

    # score and remove -------------------------------------------------------------------------
    started = time.perf_counter()
    if console is not None:
        console.print(f"scoring {setup.n_layers} layers on {len(setup.scoring)} conversations", highlight=False)
    pruning = score_and_remove(setup, method=opts.method, max_length=opts.max_length)

    # save -------------------------------------------------------------------------------------
    save_pruned(setup)
    report = prune_report(opts, setup, pruning, seconds=round(time.perf_counter() - started, 1))
    ctx.registry.register_model(opts.name, kind="base", path=setup.target, metadata=lineage(opts, report, ctx))
    return report


def set_up_pruning(opts: PruneOptions, ctx: Context) -> PruneSetup:
    """Check the target name is free and the depth possible; load the source model, its tokenizer and the texts."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    source = resolve_base_model(opts.model, ctx)
    target = ctx.workspace.models / opts.name
    if target.exists() and not opts.force:
        raise ConfigError(f"{target} already exists", hint="choose another --name, or --force to replace it")
    ctx.registry.check_name_free(opts.name)  # --force replaces a leftover folder, never a registered model
    dataset_dir = resolve_dataset(opts.dataset, ctx.workspace.datasets)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    if not tokenizer.chat_template:
        raise ConfigError(f"{source.name} has no chat template", hint="prune a chat model (or an instruct one)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = transformers.AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    n_layers = len(decoder_layers(model))
    drop = n_layers - opts.layers
    if not 1 <= drop <= n_layers - 3:
        raise ConfigError(
            f"--layers {opts.layers}: {source.name} has {n_layers} layers; keep between 3 and {n_layers - 1}",
            hint="the first and last layer are always kept, and at least one is removed",
        )
    scoring = calibration_texts(dataset_dir, tokenizer, split="train", limit=opts.samples)
    held_out = calibration_texts(dataset_dir, tokenizer, split="validation", limit=max(8, opts.samples // 4))
    return PruneSetup(source, target, dataset_dir, tokenizer, model, n_layers, drop, scoring, held_out)


def score_and_remove(setup: PruneSetup, *, method: Method, max_length: int) -> Pruning:
    """Score the layers, choose the ones to drop by ``method`` and remove them from ``setup.model``."""
    model, tokenizer, scoring = setup.model, setup.tokenizer, setup.scoring
    scores = score_layers(model, tokenizer, scoring, drop=setup.drop, max_length=max_length)
    if method == "loss":
        scores.removal_loss = removal_losses(model, tokenizer, scoring, max_length=max_length)
    dropped = choose_dropped(scores, setup.drop, method)
    loss_before = calibration_loss(model, tokenizer, setup.held_out, max_length=max_length)
    remove_layers(model, dropped)
    loss_after = calibration_loss(model, tokenizer, setup.held_out, max_length=max_length)
    return Pruning(scores, dropped, loss_before, loss_after)


def save_pruned(setup: PruneSetup) -> None:
    """Save the pruned model (bf16) and its tokenizer to ``setup.target``, replacing it only once complete."""
    torch = require("torch", "train")
    target = setup.target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    setup.model.to(torch.bfloat16).save_pretrained(partial, safe_serialization=True)
    setup.tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)  # renamed last: an interrupted run never leaves half a model
    partial.rename(target)


def prune_report(opts: PruneOptions, setup: PruneSetup, pruning: Pruning, *, seconds: float) -> dict:
    """What `helpline train prune` prints: the layers dropped, the calibration and the loss it cost."""
    scores = pruning.scores
    return {
        "name": opts.name,
        "path": str(setup.target),
        "source_model": opts.model,
        "method": opts.method,
        "layers_before": setup.n_layers,
        "layers_after": opts.layers,
        "dropped_layers": pruning.dropped,
        "parameters_m": round(sum(p.numel() for p in setup.model.parameters()) / 1e6, 1),
        "calibration": {
            "dataset": str(setup.dataset_dir),
            "conversations": len(setup.scoring),
            "tokens": scores.tokens,
            "held_out_conversations": len(setup.held_out),
        },
        "held_out_loss_before": pruning.loss_before,
        "held_out_loss_after": pruning.loss_after,
        "layer_influence": scores.influence,
        "block_distance": {str(k): v for k, v in scores.block_distance.items()},
        "removal_loss": {str(k): v for k, v in scores.removal_loss.items()},
        "seconds": seconds,
    }


def lineage(opts: PruneOptions, report: dict, ctx: Context) -> dict:
    """The pruned model's registry metadata: where it came from and how it was pruned."""
    return {
        "description": f"{opts.model} pruned to {opts.layers} of {report['layers_before']} layers ({opts.method}); "
        "train to heal",
        "chat": is_chat_model(opts.model, ctx),
        "pruned_from": opts.model,
        "pruning": {k: report[k] for k in ("method", "dropped_layers", "layers_before", "layers_after",
                                           "held_out_loss_before", "held_out_loss_after", "calibration")},
    }  # fmt: skip
