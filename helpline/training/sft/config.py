"""The typed config of `helpline train sft`: a YAML preset plus ``key=value`` overrides.

Every field has help text (shown by ``helpline train sft --help-config``). Field errors and the
cross-field checks are reported together, once, as a ConfigError listing every problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from helpline.platform.errors import ConfigError, NotFoundError, validation_problems
from helpline.platform.files import read_yaml_mapping, yaml_value

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class SFTConfig(BaseModel):
    """Supervised fine-tuning of a chat model on a prepared dataset (QLoRA by default)."""

    model_config = ConfigDict(extra="forbid")

    # model and chat format ------------------------------------------------------------------
    base_model: str = Field("smollm2-135m-instruct", description="Registry name/alias or folder of the base model.")
    chat_template: str | None = Field(
        None,
        description="None keeps the model's own template; 'chatml' or 'gemma' (shipped), or a .jinja file. "
        "A base model without a template needs one.",
    )
    assistant_marker: str = Field(
        "<|im_start|>assistant\n", description="Text the template puts right before each assistant answer."
    )
    end_of_turn: str = Field("<|im_end|>", description="Token that ends an assistant turn; it is trained.")

    # data ----------------------------------------------------------------------------------
    dataset: str = Field(..., description="Prepared dataset: NAME (latest version), NAME/vN or a version folder.")
    max_length: int = Field(512, ge=32, description="Longest tokenized example; longer ones are dropped, not cut.")
    max_train_examples: int | None = Field(None, ge=1, description="Use only the first N training examples.")
    max_eval_examples: int | None = Field(64, ge=1, description="Validation examples scored at each evaluation.")

    # method --------------------------------------------------------------------------------
    method: Literal["qlora", "lora", "full"] = Field("qlora", description="4-bit base + LoRA, LoRA, or full FT.")
    lora_r: int = Field(16, ge=1, description="LoRA rank (must be ≤ the server's vllm.max_lora_rank to export).")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS), description="Modules that get LoRA (attention + MLP)."
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="bitsandbytes 4-bit data type (QLoRA).")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (QLoRA).")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the matmuls on the 4-bit base; float32 on CPU, bfloat16 on GPU."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    bf16: bool = Field(False, description="Mixed precision (GPU).")

    # optimisation --------------------------------------------------------------------------
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name.")
    warmup_steps: int = Field(10, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    per_device_train_batch_size: int = Field(4, ge=1, description="Examples per step per device.")
    per_device_eval_batch_size: int = Field(8, ge=1, description="Examples per evaluation batch.")
    train_sampling_strategy: Literal["random", "group_by_length"] = Field(
        "random",
        description="group_by_length batches examples of similar length: less padding (about 27% of the tokens of "
        "a random batch of 4 on Bitext), so faster steps on a CPU.",
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    max_steps: int = Field(-1, description="Optimizer steps; -1 means num_train_epochs.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs when max_steps is -1.")
    seed: int = Field(42, description="Seed of data order, LoRA init and dropout.")

    # evaluation, checkpoints, early stopping -------------------------------------------------
    eval_steps: int = Field(25, ge=1, description="Validation loss every N steps.")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps (default: eval_steps).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (the best one is always kept).")
    early_stopping_patience: int | None = Field(3, ge=1, description="Evaluations without improvement; None: off.")
    early_stopping_threshold: float = Field(0.0, ge=0, description="Smallest eval-loss improvement that counts.")
    logging_steps: int = Field(5, ge=1, description="Training loss logged every N steps.")

    # output --------------------------------------------------------------------------------
    run_name: str | None = Field(None, description="Folder name under workspace/adapters (default: preset name).")
    output_dir: str | None = Field(None, description="Explicit output folder (overrides run_name).")
    resume: bool = Field(False, description="Continue from the last checkpoint in the output folder.")
    overwrite: bool = Field(False, description="Start over even if the output folder has checkpoints.")
    export: bool = Field(True, description="Run the adapter export gate (vLLM load + agreement) after training.")
    adapter_name: str | None = Field(None, description="Registry name of the exported adapter (default: run name).")
    model_name: str | None = Field(
        None, description="Registry name of a full fine-tune's model (method=full; default: run name)."
    )

    # several GPUs (accelerate launch); ignored on one device ---------------------------------
    fsdp: str = Field("", description="transformers' fsdp option, e.g. 'full_shard auto_wrap' (multi-GPU).")
    fsdp_config: dict = Field(default_factory=dict, description="transformers' fsdp_config (multi-GPU).")

    @model_validator(mode="after")
    def _cross_field(self) -> SFTConfig:
        problems = []
        save = self.save_steps or self.eval_steps
        if save % self.eval_steps:
            problems.append(
                f"save_steps ({save}) must be a multiple of eval_steps ({self.eval_steps}) to keep the best one"
            )
        if self.max_steps == 0 or self.max_steps < -1:
            problems.append("max_steps must be -1 (use num_train_epochs) or a positive number")
        if self.resume and self.overwrite:
            problems.append("resume and overwrite contradict each other")
        if self.method != "full" and not self.lora_target_modules:
            problems.append("lora_target_modules is empty: LoRA would train nothing")
        if self.method == "qlora" and self.fsdp and self.compute_dtype == "float32":
            problems.append("QLoRA with FSDP needs compute_dtype bfloat16 (quant storage must match)")
        if self.method == "full" and self.export:
            problems.append("export=true is for adapters; a full fine-tune is not an adapter (set export=false)")
        if self.method != "full" and self.model_name:
            problems.append("model_name names a full fine-tune (method=full); an adapter takes adapter_name")
        if not self.assistant_marker or not self.end_of_turn:
            problems.append("assistant_marker and end_of_turn must not be empty (they drive the loss mask)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def parse_overrides(pairs: list[str]) -> dict:
    """``["lr=1e-4", "method=lora"]`` → dict; values are YAML (numbers, booleans, lists, null)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE", hint="e.g. max_steps=20 method=lora")
        out[key.strip()] = yaml_value(key.strip(), value)
    return out


def read_preset(path: str | Path | None, *, hint: str) -> tuple[dict, str | None]:
    """A preset's fields and name: ``path`` is a YAML file or the stem of one shipped in ``configs/``."""
    if path is None:
        return {}, None
    file = Path(path)
    if not file.is_file():
        shipped = Path(__file__).parents[1] / "configs" / f"{Path(path).stem}.yaml"
        if not shipped.is_file():
            raise NotFoundError(f"config {path} does not exist", hint=hint)
        file = shipped
    return read_yaml_mapping(file, what="config", hint=hint), file.stem


def validated(model: type[BaseModel], data: dict, *, what: str, hint: str):  # type: ignore[no-untyped-def]
    """``model(**data)``, every problem reported at once as a ConfigError."""
    try:
        return model(**data)
    except ValidationError as e:
        raise ConfigError(f"invalid {what}: {'; '.join(validation_problems(e.errors()))}", hint=hint) from e


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> tuple[SFTConfig, str]:
    """Read a preset and apply overrides; returns the config and the preset's name."""
    data, name = read_preset(path, hint="see helpline/training/configs/*.yaml")
    data.update(parse_overrides(overrides or []))
    hint = "fix the preset or the key=value overrides (`helpline train sft --help-config` lists every field)"
    return validated(SFTConfig, data, what="training config", hint=hint), name or "sft"
