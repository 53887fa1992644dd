"""The adapter export gate: an adapter is registered only if serving it is known to work.

Checks, in order (cheap first): LoRA rank ≤ the server's ``vllm.max_lora_rank``; no
``modules_to_save`` (vLLM cannot serve them); it loads and generates in the real vLLM engine; and on
a fixed prompt set its greedy answers in vLLM agree with the PEFT model's in transformers. vLLM
serves in bf16 while transformers runs fp32 here, so answers can drift after a near-tie; the
agreement is measured and reported, and ``min_agreement`` decides. Below it, vLLM is asked again in
float32: if it then agrees, the drift was bf16 rounding (the adapter is registered, both figures kept);
if not, the adapter is served wrongly and refused.

A passed adapter is copied to ``<workspace>/models/NAME`` (its merged model to ``NAME-merged``) and
registered from there, so a later run in the same training folder never changes what is served. NAME
must be new to the registry and to that folder; both are checked before anything runs or is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import yaml

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, HelplineError, NotFoundError
from helpline.platform.lazy_imports import require
from helpline.platform.registry import ModelNameTakenError


class ExportRefusedError(HelplineError):
    """The adapter failed the export gate and was not registered."""

    exit_code = 3


def static_checks(adapter_dir: Path, *, max_lora_rank: int) -> list[str]:
    """Problems visible in adapter_config.json alone."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    problems = []
    ranks = [config.get("r", 0), *(config.get("rank_pattern") or {}).values()]
    if max(ranks) > max_lora_rank:
        problems.append(f"LoRA rank {max(ranks)} exceeds the server's vllm.max_lora_rank {max_lora_rank}")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']} cannot be served by vLLM")
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')} is not LoRA")
    return problems


def token_agreement(reference: list[list[int]], served: list[list[int]]) -> dict:
    """How far greedy answers agree: common prefix over the longer answer, and exact matches.

    Greedy decoding cannot re-converge after one differing token, so the common prefix is what
    counts; a position-wise comparison after it would measure noise.
    """
    prefix_shares, exact = [], 0
    for a, b in zip(reference, served, strict=True):
        common = 0
        for x, y in zip(a, b):
            if x != y:
                break
            common += 1
        prefix_shares.append(common / max(1, len(a), len(b)))
        exact += a == b
    return {
        "mean_prefix_agreement": round(sum(prefix_shares) / max(1, len(prefix_shares)), 4),
        "exact_match": f"{exact}/{len(reference)}",
        "per_prompt": [round(s, 3) for s in prefix_shares],
    }


def peft_generate(base_path: Path, adapter_dir: Path, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Greedy answers of the PEFT model in transformers (fp32), one prompt at a time (no padding effects)."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    peft = require("peft", "train")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    eos = model.generation_config.eos_token_id
    pad = eos[0] if isinstance(eos, list) else eos  # a chat model lists its end-of-turn tokens; pad takes one
    outputs = []
    with torch.inference_mode():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)
            outputs.append(out[0][len(ids) :].tolist())
    return outputs


def vllm_generate(base_path: Path, adapter_dir: Path, prompts: list[list[int]], *, max_tokens: int, settings) -> dict:
    """Run helpline.training.vllm_check in a subprocess; raise with its log tail if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(
            json.dumps(
                {
                    "base_model": str(base_path),
                    "adapter": str(adapter_dir),
                    "prompts": prompts,
                    "max_tokens": max_tokens,
                    "dtype": settings.dtype,
                    "max_model_len": settings.max_model_len,
                    "gpu_memory_utilization": settings.gpu_memory_utilization,
                    "max_lora_rank": settings.max_lora_rank,
                }
            )
        )
        cmd = [sys.executable, "-m", "helpline.training.vllm_check", str(req), str(res)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not res.is_file():
            tail = (proc.stderr or proc.stdout)[-1500:]
            raise ExportRefusedError(
                f"the adapter did not load or generate in vLLM (exit {proc.returncode}): {tail}",
                hint="check the adapter's target modules and rank against the serving engine",
            )
        return json.loads(res.read_text())


def fixed_prompts(tokenizer) -> list[list[int]]:
    """The gate's prompt set, rendered with the training tokenizer's chat template."""
    questions = yaml.safe_load(resources.files("helpline.training").joinpath("export_prompts.yaml").read_text())
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def merge_adapter(base_path: Path, adapter_dir: Path, target: Path) -> Path:
    """Write base + adapter as one full checkpoint (bf16, like the imported base), for engines without LoRA."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    peft = require("peft", "train")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.to(torch.bfloat16).save_pretrained(str(target), safe_serialization=True)
    transformers.AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(target))
    return target


def export_adapter(
    run_dir: Path,
    *,
    ctx: Context,
    name: str | None = None,
    merge: bool = False,
    max_tokens: int = 48,
    min_agreement: float = 0.5,
    console=None,
) -> dict:
    """Run the gate on ``run_dir/adapter``; register it (and the merged model) if it passes."""
    transformers = require("transformers", "train")
    run_dir = Path(run_dir).resolve()
    summary = read_training_summary(run_dir)
    adapter_dir = run_dir / "adapter"
    base_path = Path(summary["base_model_path"])
    name = name or summary["config"].get("adapter_name") or run_dir.name
    check_export_names(name, merge=merge, ctx=ctx)
    settings = ctx.settings.vllm
    report: dict = {"adapter": str(adapter_dir), "name": name, "checked_at": time.time()}

    report["static_problems"] = static_checks(adapter_dir, max_lora_rank=settings.max_lora_rank)
    if not report["static_problems"]:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(adapter_dir))
        report |= serving_checks(base_path, adapter_dir, tokenizer, settings=settings, max_tokens=max_tokens,
                                 min_agreement=min_agreement, console=console)  # fmt: skip
    agreed = report.get("agreement", {}).get("mean_prefix_agreement", 0.0)
    report["passed"] = not report["static_problems"] and agreed >= min_agreement
    report["min_agreement"] = min_agreement
    (run_dir / "export_report.json").write_text(json.dumps(report, indent=2))
    if not report["passed"]:
        reasons = report["static_problems"] or [f"token agreement {agreed} < {min_agreement}"]
        raise ExportRefusedError(
            f"adapter {name} was not registered: {'; '.join(reasons)}",
            hint=f"see {run_dir / 'export_report.json'}; retrain with a servable config",
        )
    register_adapter(report, summary, ctx=ctx, run_dir=run_dir, merge=merge)
    if console:
        console.print(f"[green]registered[/] adapter {name}; vLLM/PEFT token agreement {agreed}")
    return report


def check_export_names(name: str, *, merge: bool, ctx: Context) -> None:
    """Refuse a name the registry holds, or whose folder under ``<workspace>/models`` exists (and the same
    for ``NAME-merged`` with ``merge``): an export never replaces a registered model nor writes into its
    folder."""
    for each in (name, f"{name}-merged") if merge else (name,):
        try:
            ctx.registry.check_name_free(each)
        except ModelNameTakenError as e:
            raise ModelNameTakenError(
                e.message, hint=f"{e.hint}: --name NEW for `helpline train export`, adapter_name=NEW for `train sft`"
            ) from e
        if (ctx.workspace.models / each).exists():
            raise ConfigError(
                f"{ctx.workspace.models / each} already exists, though no model named {each!r} is registered",
                hint="export under another --name, or remove that folder (a leftover of an interrupted export)",
            )


def read_training_summary(run_dir: Path) -> dict:
    """The ``training_summary.json`` of a finished run (refused when the folder is not one)."""
    if not (run_dir / "training_summary.json").is_file():
        raise NotFoundError(
            f"{run_dir} is not a finished training run (no training_summary.json)",
            hint="pass the run folder `helpline train sft` printed, e.g. .helpline/adapters/RUN_NAME",
        )
    return json.loads((run_dir / "training_summary.json").read_text())


def serving_checks(
    base_path: Path, adapter_dir: Path, tokenizer, *, settings, max_tokens: int, min_agreement: float, console=None
) -> dict:
    """vLLM's greedy answers to the fixed prompts against the PEFT model's: the ``vllm`` run's figures, the
    ``agreement`` (measured again in float32 when the serving dtype falls short) and two ``samples``."""
    prompts = fixed_prompts(tokenizer)
    if console:
        console.print(f"export gate: generating {len(prompts)} answers in vLLM (engine start ~1 min)")
    served = vllm_generate(base_path, adapter_dir, prompts, max_tokens=max_tokens, settings=settings)
    reference = peft_generate(base_path, adapter_dir, prompts, max_tokens)
    out: dict = {"vllm": {k: v for k, v in served.items() if k != "outputs"}}
    out["agreement"] = token_agreement(reference, served["outputs"])
    out["agreement"]["dtypes"] = {"vllm": settings.dtype, "transformers": "float32"}
    if out["agreement"]["mean_prefix_agreement"] < min_agreement and settings.dtype != "float32":
        out["agreement_serving_dtype"] = out["agreement"]
        out["agreement"] = float32_agreement(base_path, adapter_dir, prompts, reference, settings=settings,
                                             max_tokens=max_tokens, console=console,
                                             serving_agreement=out["agreement"]["mean_prefix_agreement"])  # fmt: skip
    out["samples"] = [
        {
            "peft": tokenizer.decode(r, skip_special_tokens=True),
            "vllm": tokenizer.decode(s, skip_special_tokens=True),
        }
        for r, s in list(zip(reference, served["outputs"]))[:2]
    ]
    return out


def float32_agreement(
    base_path: Path, adapter_dir: Path, prompts: list[list[int]], reference: list[list[int]], *, settings,
    max_tokens: int, serving_agreement: float, console=None,
) -> dict:  # fmt: skip
    """The agreement with vLLM asked again in float32 (``settings`` and ``serving_agreement`` are the serving
    dtype's)."""
    # Greedy answers fork at the first near-tie, and bf16 forks early on some models (Gemma 3). Asking
    # vLLM again in float32 tells rounding from a wrongly served adapter: a broken one still disagrees.
    if console:
        console.print(
            f"export gate: agreement {serving_agreement} in {settings.dtype}; checking again with vLLM in float32"
        )
    f32 = vllm_generate(base_path, adapter_dir, prompts, max_tokens=max_tokens,
                        settings=settings.model_copy(update={"dtype": "float32"}))  # fmt: skip
    return {**token_agreement(reference, f32["outputs"]), "dtypes": {"vllm": "float32", "transformers": "float32"}}


def register_adapter(report: dict, summary: dict, *, ctx: Context, run_dir: Path, merge: bool) -> None:
    """Copy a passed adapter to its own folder and register it from there with its lineage and model card
    (and the merged model if ``merge``), and record that in ``report`` and ``export_report.json``."""
    name = report["name"]
    kb = ctx.registry.kb_versions()
    lineage = {
        "base_model": summary["base_model"],
        "dataset": summary["dataset"],
        "kb_version": kb[-1].id if kb else None,
        "config": summary["config"],
        "metrics": {k: summary[k] for k in ("best_eval_loss", "final_eval_loss", "train_loss", "global_step")},
        "export_gate": {"agreement": report["agreement"], "vllm": report["vllm"]},
        "tracking": summary.get("tracking"),  # the training run in MLflow (platform/tracking.py)
    }
    trained = run_dir / "adapter"
    adapter_dir = _new_folder(ctx.workspace.models / name, lambda partial: shutil.copytree(trained, partial))
    write_model_card(adapter_dir, name, lineage)
    try:
        record = ctx.registry.register_model(
            name, kind="adapter", path=adapter_dir, base_model=summary["base_model"], metadata=lineage
        )
    except HelplineError:
        shutil.rmtree(adapter_dir)  # ours: nothing registered points at it
        raise
    report["registered"], report["path"] = record.name, str(adapter_dir)
    if merge:
        base_path = Path(summary["base_model_path"])
        merged = _new_folder(ctx.workspace.models / f"{name}-merged",
                             lambda partial: merge_adapter(base_path, adapter_dir, partial))  # fmt: skip
        ctx.registry.register_model(
            f"{name}-merged", kind="base", path=merged, metadata={**lineage, "merged_from": name}
        )
        report["merged"] = str(merged)
    (run_dir / "export_report.json").write_text(json.dumps(report, indent=2))


def _new_folder(target: Path, write) -> Path:
    """``target``, written by ``write(partial)`` and renamed into place last (an interrupted export leaves
    no half-written model); refused if it exists, so a registered model's folder is never written again."""
    if target.exists():
        raise ConfigError(f"{target} already exists", hint="export under another --name")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    partial.rename(target)
    return target


def write_model_card(adapter_dir: Path, name: str, lineage: dict) -> None:
    """README.md next to the adapter: what it is, what it was trained on, how it scored."""
    card = [
        f"# {name}",
        "",
        f"LoRA adapter for `{lineage['base_model']}`, trained by `helpline train sft`.",
        "",
        f"- dataset: {lineage['dataset']['name']} {lineage['dataset']['version']} "
        f"(sha256 {lineage['dataset']['hash'][:16]}…)",
        f"- knowledge-base version at export: {lineage['kb_version']}",
        f"- metrics: {json.dumps(lineage['metrics'])}",
        f"- export gate: {json.dumps(lineage['export_gate'])}",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(lineage["config"], sort_keys=False).strip(),
        "```",
        "",
    ]
    (adapter_dir / "README.md").write_text("\n".join(card))
