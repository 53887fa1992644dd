"""The typed config of `helpline train preference`: a YAML preset plus ``key=value`` overrides.

Every field has help text (``helpline train preference --help-config``); field errors and the cross-field
checks are reported together, once, as a ConfigError, the same way as `train sft`'s config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from helpline.training.sft.config import LLAMA_PROJECTIONS, parse_overrides, read_preset, validated


class PreferenceConfig(BaseModel):
    """Preference tuning of a chat model's LoRA adapter on (prompt, chosen, rejected) pairs: DPO or ORPO."""

    model_config = ConfigDict(extra="forbid")

    # model -----------------------------------------------------------------------------------
    base_model: str = Field("smollm2-135m-instruct", description="Registry name/alias or folder of the base model.")
    chat_template: str | None = Field(
        None, description="None keeps the model's own template; 'chatml' or 'gemma' (shipped), or a .jinja file."
    )
    init_adapter: str | None = Field(
        None,
        description="LoRA adapter to continue training (a folder with adapter_config.json, a training run folder, "
        "or a registry name/alias such as 'production'); None starts a fresh adapter. With DPO the reference "
        "policy is this adapter as it was before training.",
    )

    # method ----------------------------------------------------------------------------------
    method: Literal["dpo", "orpo"] = Field(
        "dpo",
        description="dpo: pairwise loss against a frozen reference (the starting adapter); orpo: NLL on the chosen "
        "answer plus an odds-ratio term, no reference model.",
    )
    beta: float = Field(
        0.1, gt=0, description="DPO: how far the policy may stray from the reference; ORPO: odds-ratio weight."
    )
    precompute_ref_log_probs: bool = Field(
        True,
        description="DPO: score every pair under the reference once before training rather than at every step "
        "(fewer forward passes when a run sees each pair more than once).",
    )
    quantization: Literal["auto", "4bit", "none"] = Field(
        "auto",
        description="4bit: NF4 base (QLoRA, bitsandbytes); none: float32 base; auto: 4bit where torch sees a CUDA GPU, "
        "none on a CPU (a DPO step runs the base twice, and 4-bit matmuls are slower than float32 on a CPU).",
    )
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the matmuls on a 4-bit base; bfloat16 on a GPU."
    )
    bf16: bool = Field(False, description="Mixed precision (GPU).")
    lora_r: int = Field(16, ge=1, description="Rank of a fresh adapter (≤ vllm.max_lora_rank to export).")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator of a fresh adapter (scale = alpha / r).")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout of a fresh adapter.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS), description="Modules a fresh adapter puts LoRA on."
    )

    # data and optimisation -------------------------------------------------------------------
    max_length: int = Field(
        768, ge=32, description="Longest tokenized prompt + answer; a pair with a longer side is dropped, not cut."
    )
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate.")
    lr_scheduler_type: str = Field("linear", description="transformers scheduler name.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    per_device_train_batch_size: int = Field(4, ge=1, description="Pairs per step per device.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    max_steps: int = Field(20, description="Optimizer steps; -1 means num_train_epochs.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs when max_steps is -1.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    seed: int = Field(42, description="Seed of data order and a fresh adapter's initialisation.")
    logging_steps: int = Field(1, ge=1, description="Loss and reward margins logged every N steps.")

    # output ----------------------------------------------------------------------------------
    run_name: str | None = Field(None, description="Folder name under workspace/adapters (default: preset name).")
    output_dir: str | None = Field(None, description="Explicit output folder (overrides run_name).")
    overwrite: bool = Field(False, description="Replace an earlier finished run in the output folder.")
    export: bool = Field(True, description="Run the adapter export gate (vLLM load + agreement) after training.")
    adapter_name: str | None = Field(None, description="Registry name of the exported adapter (default: run name).")

    @model_validator(mode="after")
    def _cross_field(self) -> PreferenceConfig:
        problems = []
        if self.max_steps == 0 or self.max_steps < -1:
            problems.append("max_steps must be -1 (use num_train_epochs) or a positive number")
        if self.init_adapter is None and not self.lora_target_modules:
            problems.append("lora_target_modules is empty: a fresh adapter would train nothing")
        if self.quantization == "none" and self.compute_dtype != "float32":
            problems.append("compute_dtype is for a 4-bit base; with quantization=none use bf16=true instead")
        if problems:
            raise ValueError("; ".join(problems))
        return self


HINT = "fix the preset or the overrides (`helpline train preference --help-config` lists every field)"


def load_preference_config(path: str | Path | None, overrides: list[str] | None = None) -> tuple[PreferenceConfig, str]:
    """Read a preset (a YAML file or the stem of one shipped in ``configs/``) and apply ``key=value``
    overrides; returns the config and the preset's name."""
    data, name = read_preset(path, hint="see helpline/training/configs/*-dpo-*.yaml")
    data.update(parse_overrides(overrides or []))
    return validated(PreferenceConfig, data, what="preference config", hint=HINT), name or "preference"
