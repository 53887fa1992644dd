"""`helpline bench training`: peak memory and tokens/s of full FT, LoRA and QLoRA on the same batches.

Each method runs in its own process (``python -m helpline.bench.training RESULT.json METHOD ...``),
so its peak resident memory (``VmHWM``, which starts afresh at exec; ``ru_maxrss`` would carry the
parent's peak over) is its own: model, gradients, optimizer state and
activations, on top of the interpreter with torch loaded (reported as ``baseline_rss_mb``).

Loading a checkpoint briefly holds more than training needs (QLoRA reads the full-precision weights
before quantizing them), so the peak of the training steps alone is reported too: Linux resets a
process's peak (``VmHWM``) when ``5`` is written to ``/proc/self/clear_refs``; after that reset the
peak counts what stays resident while training (model, optimizer state) plus activations.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpline.platform.lazy_imports import require
from helpline.training.sft.config import SFTConfig
from helpline.training.sft.trainer import load_model, load_tokenizer, tokenize_split

METHODS = ("full", "lora", "qlora")


def _rss_mb() -> float:
    """Peak resident memory of this process so far (since exec, or since the last reset)."""
    peak = _peak_since_reset_mb()
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Restart the process's peak-RSS counter (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_since_reset_mb() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def worker(result_path: str, method: str, base: str, dataset: str, steps: int, batch: int, max_length: int,
           checkpointing: int = 0) -> None:  # fmt: skip
    """Train ``steps`` optimizer steps with ``method``; write timings and peak memory."""
    torch = require("torch", "train")


    torch.manual_seed(0)
    baseline = _rss_mb()
    cfg = SFTConfig(
        dataset=dataset, method=method, max_length=max_length, export=False, gradient_checkpointing=bool(checkpointing)
    )
    tokenizer = load_tokenizer(Path(base), cfg)
    rows, _ = tokenize_split(tokenizer, Path(dataset) / "train.jsonl", cfg, limit=steps * batch)
    model = load_model(Path(base), cfg)
    if checkpointing:  # what TRL's SFTTrainer does with gradient_checkpointing=True
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    loaded_rss = _rss_mb()
    reset = _reset_peak()
    step_times, tokens = [], 0
    for step in range(steps):
        chunk = rows[step * batch : (step + 1) * batch]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"])) for r in chunk])
        labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in chunk])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in chunk])
        started = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - started)
        tokens += int(mask.sum())
    timed = step_times[1:] or step_times  # the first step pays for lazy allocations
    result = {
        "method": method,
        "peak_rss_mb": round(max(loaded_rss, _rss_mb()), 1),
        "baseline_rss_mb": round(baseline, 1),
        "load_peak_rss_mb": round(loaded_rss, 1),
        "train_peak_rss_mb": round(_rss_mb(), 1) if reset else None,
        "trainable_params": sum(p.numel() for p in params),
        "median_step_s": round(statistics.median(timed), 3),
        "tokens_per_s": round(tokens / len(step_times) / statistics.median(timed), 1),
        "steps": steps,
        "batch": batch,
        "gradient_checkpointing": bool(checkpointing),
        "final_loss": round(float(loss), 4),
    }
    Path(result_path).write_text(json.dumps(result))


def run_bench(base: Path, dataset: Path, *, methods=METHODS, steps: int = 6, batch: int = 4, max_length: int = 256,
              checkpointing: bool = False):  # fmt: skip
    """Run each method in a fresh subprocess; returns per-method figures and the QLoRA/full memory ratio."""

    results = {}
    for method in methods:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, "-m", "helpline.bench.training", out.name, method, str(base), str(dataset),
                   str(steps), str(batch), str(max_length), str(int(checkpointing))]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                results[method] = {"error": proc.stderr[-800:]}
                continue
            results[method] = json.loads(Path(out.name).read_text())
    report = {"model": str(base), "dataset": str(dataset), "gradient_checkpointing": checkpointing, "methods": results}
    full, qlora = results.get("full", {}), results.get("qlora", {})
    if "peak_rss_mb" in full and "peak_rss_mb" in qlora:
        report["qlora_over_full_peak"] = round(qlora["peak_rss_mb"] / full["peak_rss_mb"], 3)
        above = [r["peak_rss_mb"] - r["baseline_rss_mb"] for r in (qlora, full)]
        report["qlora_over_full_above_baseline"] = round(above[0] / above[1], 3)
    if full.get("train_peak_rss_mb") and qlora.get("train_peak_rss_mb"):
        report["qlora_over_full_train_peak"] = round(qlora["train_peak_rss_mb"] / full["train_peak_rss_mb"], 3)
        above = [r["train_peak_rss_mb"] - r["baseline_rss_mb"] for r in (qlora, full)]
        report["qlora_over_full_train_above_baseline"] = round(above[0] / above[1], 3)
    return report


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], *map(int, sys.argv[5:9]))
