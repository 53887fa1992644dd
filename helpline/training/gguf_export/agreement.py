"""Do the GGUF files answer as the checkpoint they were written from? Greedy answers to the export gate's
fixed prompts, in transformers on both sides (fp32), compared token by token.

Each side renders the prompts with its own tokenizer and chat template: the GGUF side's come from the
file's metadata, so the check covers the tokenizer a llama.cpp or Ollama user gets, and the report says
separately whether the two tokenizers gave the same prompt tokens. Both stop at the checkpoint's stop
tokens, so a difference in the answers is a difference in the weights or the prompts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from helpline.platform.lazy_imports import require
from helpline.training.export import fixed_prompts, token_agreement


def greedy_answers(model: Any, prompts: list[list[int]], *, max_tokens: int, stop: list[int]) -> list[list[int]]:
    """``model``'s greedy continuation of each prompt, one at a time (no padding effects)."""
    torch = require("torch", "train")
    outputs = []
    with torch.inference_mode():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                 eos_token_id=stop, pad_token_id=stop[0])  # fmt: skip
            outputs.append(out[0][len(ids) :].tolist())
    return outputs


def position_agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    """Generated tokens equal at the same position, over all positions of the longer answer of each pair."""
    equal = sum(x == y for a, b in zip(reference, other, strict=True) for x, y in zip(a, b))
    total = sum(max(len(a), len(b)) for a, b in zip(reference, other, strict=True))
    return round(equal / max(1, total), 4)


def next_token_agreement(model: Any, prompts: list[list[int]], reference: list[list[int]]) -> float:
    """Given the checkpoint's answer so far, how often ``model``'s most likely next token is the checkpoint's.

    Unlike the greedy comparison this does not stop counting at the first near-tie that forks an answer,
    so it tells a quantized file's small drift (most positions agree) from a broken one (few do)."""
    torch = require("torch", "train")
    equal = total = 0
    with torch.inference_mode():
        for ids, answer in zip(prompts, reference, strict=True):
            if not answer:
                continue
            logits = model(torch.tensor([ids + answer])).logits[0, len(ids) - 1 : len(ids) + len(answer) - 1]
            equal += int((logits.argmax(-1) == torch.tensor(answer)).sum())
            total += len(answer)
    return round(equal / max(1, total), 4)


def stop_tokens(model: Any) -> list[int]:
    """The checkpoint's end-of-answer tokens (a chat model may list several)."""
    eos = model.generation_config.eos_token_id
    return list(eos) if isinstance(eos, list) else [eos]


def compare_with_checkpoint(model_dir: Path, files: dict[str, Path], *, max_tokens: int) -> dict:
    """Greedy answers of the checkpoint and of each GGUF file (``{variant: path}``) on the fixed prompts:
    per variant the gate's agreement figures, ``position_agreement``, ``next_token_agreement`` and how many
    prompts tokenized alike."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    prompts = fixed_prompts(tokenizer)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    stop = stop_tokens(model)
    started = time.monotonic()
    reference = greedy_answers(model, prompts, max_tokens=max_tokens, stop=stop)
    out: dict = {"prompts": len(prompts), "max_tokens": max_tokens, "stop_tokens": stop,
                 "checkpoint_seconds": round(time.monotonic() - started, 1)}  # fmt: skip
    del model
    samples = {"checkpoint": tokenizer.decode(reference[0], skip_special_tokens=True)}
    for variant, path in files.items():
        gguf_tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        gguf_prompts = fixed_prompts(gguf_tokenizer)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32
        ).eval()
        started = time.monotonic()
        answers = greedy_answers(loaded, gguf_prompts, max_tokens=max_tokens, stop=stop)
        next_token = next_token_agreement(loaded, gguf_prompts, reference)
        del loaded
        alike = sum(a == b for a, b in zip(prompts, gguf_prompts, strict=True))
        out[variant] = {
            **token_agreement(reference, answers),
            "position_agreement": position_agreement(reference, answers),
            "next_token_agreement": next_token,
            "prompts_tokenized_alike": f"{alike}/{len(prompts)}",
            "seconds": round(time.monotonic() - started, 1),
        }
        samples[variant] = gguf_tokenizer.decode(answers[0], skip_special_tokens=True)
    out["samples"] = samples
    return out
