"""`helpline train export SOURCE --gguf`: a merged model as GGUF files for llama.cpp and Ollama, checked.

SOURCE is a training run (the adapter export gate runs first and its merged model is converted), a model
folder, or a registered model (an adapter is merged into its base in a temporary folder). Steps, in an
order an interruption cannot leave half-done:

1. resolve SOURCE and refuse a ``<workspace>/models/NAME-gguf`` that exists, before anything runs;
2. write each variant (F16, Q8_0, ...) into ``NAME-gguf.partial`` and read it back with ``GGUFReader``;
3. greedy answers of each file (loaded by transformers) against the checkpoint's; the unquantized
   variant must agree at least ``min_agreement`` (a quantized one's drift is reported, not judged);
4. a Modelfile for Ollama and ``gguf_report.json``; the folder is renamed into place last.

Nothing is registered: the files are for runtimes outside helpline, which serves the checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError
from helpline.platform.lazy_imports import require
from helpline.training.export import ExportRefusedError, export_adapter, merge_adapter, read_training_summary
from helpline.training.gguf_export.agreement import compare_with_checkpoint
from helpline.training.gguf_export.convert import QUANTS, read_back, read_shape, write_gguf

DEFAULT_QUANTS = ("f16", "q8_0")


def export_to_gguf(
    source: str | Path,
    *,
    ctx: Context,
    name: str | None = None,
    quants: tuple[str, ...] = DEFAULT_QUANTS,
    max_tokens: int = 48,
    min_agreement: float = 0.5,
    console=None,
) -> dict:
    """Convert SOURCE (a training run, a model folder or a registered model) to GGUF; the run's gate report
    with the GGUF report under ``gguf``, or the GGUF report alone for a model."""
    unknown = [q for q in quants if q not in QUANTS]
    if unknown or not quants:
        raise ConfigError(f"unknown --gguf-quant {', '.join(unknown) or '(none)'}", hint=f"use {', '.join(QUANTS)}")
    options = {"quants": quants, "max_tokens": max_tokens, "min_agreement": min_agreement, "console": console}
    path = Path(source).expanduser()
    if (path / "training_summary.json").is_file():
        run_dir = path.resolve()
        # Named as export_adapter names it, so that NAME-gguf is refused before the gate's minutes.
        name = name or read_training_summary(run_dir)["config"].get("adapter_name") or run_dir.name
        target = free_target(ctx, name)
        report = export_adapter(run_dir, ctx=ctx, name=name, merge=True, console=console)
        report["gguf"] = export_gguf(Path(report["merged"]), target, name=name, **options)
        return report
    if (path / "config.json").is_file():
        name = name or path.resolve().name
        return export_gguf(path.resolve(), free_target(ctx, name), name=name, **options)
    record = ctx.registry.chat_model(str(source))
    name = name or record.name
    target = free_target(ctx, name)
    if record.kind != "adapter":
        return export_gguf(Path(record.path), target, name=name, **options)
    base = ctx.registry.base_of(record)
    with tempfile.TemporaryDirectory(dir=ctx.workspace.models, prefix=f".{name}-merging-") as tmp:
        if console:
            console.print(f"merging adapter {record.name} into {base.name}")
        merged = merge_adapter(Path(base.path), Path(record.path), Path(tmp) / "merged")
        return export_gguf(merged, target, name=name, source=f"{record.name} merged into {base.name}", **options)


def free_target(ctx: Context, name: str) -> Path:
    """``<workspace>/models/NAME-gguf``, refused if it exists: an export never writes over earlier files."""
    target = ctx.workspace.models / f"{name}-gguf"
    if target.exists():
        raise ConfigError(f"{target} already exists", hint="export under another --name, or remove that folder")
    return target


def export_gguf(
    model_dir: Path, target: Path, *, name: str, quants: tuple[str, ...], max_tokens: int, min_agreement: float,
    source: str | None = None, console=None,
) -> dict:  # fmt: skip
    """Write, read back and compare the GGUF variants of ``model_dir``; move them to ``target`` if the
    unquantized one agrees with the checkpoint (:class:`ExportRefusedError` if not)."""
    read_shape(model_dir)  # an unsupported model is refused before a file is written
    started = time.monotonic()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    files: dict[str, dict] = {}
    for quant in quants:
        path, t0 = partial / f"{name}-{quant}.gguf", time.monotonic()
        if console:
            console.print(f"gguf export: writing {path.name}")
        written = write_gguf(model_dir, path, quant=quant, name=name)
        files[quant] = {"file": path.name, "bytes": path.stat().st_size, **read_back(path, written),
                        "write_seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
    if console:
        console.print(f"gguf export: comparing greedy answers on the fixed prompts ({', '.join(quants)})")
    agreement = compare_with_checkpoint(model_dir, {q: partial / f["file"] for q, f in files.items()},
                                        max_tokens=max_tokens)  # fmt: skip
    judged = next((q for q in ("f32", "f16") if q in files), None)
    report: dict = {
        "name": name, "source": source or str(model_dir), "folder": str(target), "files": files, "agreement": agreement,
        "min_agreement": min_agreement, "judged_variant": judged,
    }  # fmt: skip
    agreed = agreement[judged]["mean_prefix_agreement"] if judged else None
    report["passed"] = agreed is None or agreed >= min_agreement
    report["modelfile"] = write_modelfile(partial, model_dir, gguf_file=files[pick_for_ollama(files)]["file"],
                                          name=name, stops=agreement["stop_tokens"])  # fmt: skip
    report["seconds"] = round(time.monotonic() - started, 1)
    (partial / "gguf_report.json").write_text(json.dumps(report, indent=2))
    if not report["passed"]:
        raise ExportRefusedError(
            f"the {judged} GGUF of {name} answers unlike its checkpoint: agreement {agreed} < {min_agreement}",
            hint=f"see {partial / 'gguf_report.json'}; a converter bug for this model: report it with its config.json",
        )
    partial.rename(target)
    report["modelfile"] = str(target / "Modelfile")
    for entry in files.values():
        entry["path"] = str(target / entry["file"])
    (target / "gguf_report.json").write_text(json.dumps(report, indent=2))
    return report


def pick_for_ollama(files: dict[str, dict]) -> str:
    """The variant a Modelfile points at: the quantized one when written (a quarter of F32's size)."""
    return next(q for q in ("q8_0", "f16", "f32") if q in files)


def write_modelfile(folder: Path, model_dir: Path, *, gguf_file: str, name: str, stops: list[int]) -> str:
    """An Ollama Modelfile next to the files: the GGUF, ChatML's template where the model uses ChatML (Ollama
    guesses other templates from the file's metadata) and the stop tokens."""
    tokenizer = require("transformers", "train").AutoTokenizer.from_pretrained(str(model_dir))
    lines = [f"# ollama create {name} -f Modelfile && ollama run {name}", f"FROM ./{gguf_file}"]
    if "<|im_start|>" in (tokenizer.chat_template or ""):
        lines.append(
            'TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            '<|im_start|>assistant\n"""'
        )
    lines += [f'PARAMETER stop "{token}"' for token in tokenizer.convert_ids_to_tokens(stops)]
    (folder / "Modelfile").write_text("\n".join(lines) + "\n")
    return str(folder / "Modelfile")
