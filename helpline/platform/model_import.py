"""`helpline models import PATH|HUB_ID`: bring a model of one's own, checked before it is registered.

What can be imported:

- a local Hugging Face folder (``config.json`` and weights): a chat or base model, or a sentence-transformers
  embedder (``modules.json``);
- a GGUF file: dequantized into a plain safetensors checkpoint in the workspace, as the bundled models are
  (architectures transformers reads from GGUF: llama, mistral, qwen2/3, gemma2/3, phi3, ...);
- a hub id (``owner/name``): downloaded into the workspace when this machine is online; offline, a clear error
  says how to bring the folder instead.

Checks, each reported: the architecture, and whether the installed vLLM serves it (a model it does not serve still
runs with ``engine: transformers``); a chat template (without one it trains and serves only with an adapter's
template, as Gemma 3 270M does); the weights' size against this machine's memory and its GPUs'. A folder without
a config or weights, or a GGUF of an architecture transformers cannot read, is refused with what to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpline.platform.bundled import _gguf_to_checkpoint
from helpline.platform.errors import ConfigError, DataError
from helpline.platform.lazy_imports import optional, require
from helpline.platform.registry import ModelRecord, Registry
from helpline.platform.workspace import Workspace

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt")


@dataclass
class ImportReport:
    """What was imported and what the checks found."""

    name: str
    kind: str
    path: str
    source: str
    architecture: str | None = None
    vllm_supported: bool | None = None  # None: vLLM is not installed here to ask
    chat_template: bool = False
    size_bytes: int = 0  # of the weights

    @property
    def size_gb(self) -> float:
        return round(self.size_bytes / 1e9, 2)
    memory: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "size_gb": self.size_gb}


def import_model(
    ref: str, *, workspace: Workspace, registry: Registry, name: str | None = None, copy: bool = True
) -> tuple[ModelRecord, ImportReport]:
    """Import ``ref`` (a folder, a .gguf file or a hub id) and register it as ``name`` (default: from the ref)."""
    path = Path(ref).expanduser()
    name = name or _slug(path.stem if path.suffix.lower() == ".gguf" else path.name if path.exists() else
                         ref.split("/")[-1])  # fmt: skip
    if any(m.name == name for m in registry.list_models()):  # before anything is written under models/NAME
        raise ConfigError(f"a model named {name!r} is registered already", hint="pass --name with another name")
    if path.is_file() and path.suffix.lower() == ".gguf":
        target = workspace.models / name
        _check_gguf(path)
        _gguf_to_checkpoint(path, target)
        folder, copy = target, False
    elif path.is_dir():
        folder = path
    elif _HUB_ID.fullmatch(ref) and not path.exists():
        folder, copy = _download(ref, workspace.models / name), False
    else:
        raise DataError(
            f"{ref} is neither a model folder, a .gguf file nor a hub id (owner/name)",
            hint="pass the folder holding config.json, a GGUF file, or a hub id such as HuggingFaceTB/SmolLM2-360M",
        )
    report = inspect_folder(folder, name=name, source=ref)
    if copy:
        target = workspace.models / name
        if target.resolve() != folder.resolve():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(folder, partial)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        report.path = str(target)
    meta = {"source": ref, "architecture": report.architecture, "chat": report.chat_template,
            "size_bytes": report.size_bytes, "vllm_supported": report.vllm_supported}  # fmt: skip
    record = registry.register_model(name, kind=report.kind, path=report.path, metadata=meta)  # type: ignore[arg-type]
    return record, report


def inspect_folder(folder: Path, *, name: str, source: str) -> ImportReport:
    """The checks of a model folder (see the module); DataError for one that is not a model."""
    if (folder / "modules.json").is_file():  # sentence-transformers
        report = ImportReport(name=name, kind="embedder", path=str(folder), source=source)
        report.size_bytes = _size_bytes(folder)
        return report
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise DataError(f"{folder} has no config.json", hint="import the folder that holds the model's config.json")
    if not any(p for pattern in _WEIGHTS for p in folder.rglob(pattern)):
        raise DataError(f"{folder} has no weights (*.safetensors or *.bin)", hint="download the whole model folder")
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()):
        raise DataError(f"{folder} has no tokenizer", hint="download the model's tokenizer files too")
    config = json.loads(config_path.read_text())
    report = ImportReport(name=name, kind="base", path=str(folder), source=source)
    report.architecture = (config.get("architectures") or [None])[0]
    report.vllm_supported = _vllm_serves(report.architecture)
    if report.vllm_supported is False:
        report.warnings.append(
            f"the installed vLLM does not serve {report.architecture}: serve it with engine: transformers"
        )
    report.chat_template = has_template(folder)
    if not report.chat_template:
        report.warnings.append(
            "no chat template: train it with --chat-template (chatml, gemma or a file); it serves through an "
            "adapter trained so"
        )
    report.size_bytes = _size_bytes(folder)
    report.memory = _memory_gb()
    room = max(report.memory.get("gpu_gb", 0.0), report.memory.get("ram_gb", 0.0))
    if room and report.size_gb > 0.8 * room:
        report.warnings.append(
            f"its weights ({report.size_gb:.1f} GB) take over 80% of this machine's memory ({room:.0f} GB): "
            "serve it on a larger host (deploy/presets/gpu-8b.yaml) or pick a smaller model"
        )
    return report


def has_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


def _check_gguf(path: Path) -> None:
    gguf = require("gguf", "train")
    try:
        reader = gguf.GGUFReader(str(path))
        field_ = reader.fields["general.architecture"]
        arch = bytes(field_.parts[field_.data[0]]).decode()
    except Exception as e:  # any unreadable file: the reader's errors are not one type
        raise DataError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from e
    supported = require("transformers.modeling_gguf_pytorch_utils", "train").GGUF_SUPPORTED_ARCHITECTURES
    if arch not in supported:
        raise DataError(
            f"{path} is a {arch} GGUF, which transformers cannot read",
            hint=f"import the model's safetensors folder instead (GGUF architectures read here: "
            f"{', '.join(a for a in supported if a not in ('general', 'tokenizer'))})",
        )


def _download(hub_id: str, target: Path) -> Path:
    hub = require("huggingface_hub", "train")
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        raise ConfigError(
            f"cannot download {hub_id}: this machine is offline (HF_HUB_OFFLINE)",
            hint=f"download it where there is a network (`hf download {hub_id} --local-dir DIR`), copy DIR here and "
            "run `helpline models import DIR`",
        )
    try:
        return Path(hub.snapshot_download(hub_id, local_dir=str(target)))
    except Exception as e:  # network, auth and not-found errors alike: the message carries which
        raise ConfigError(
            f"could not download {hub_id} ({type(e).__name__}: {str(e)[:200]})",
            hint=f"check the id and the network; offline, download it elsewhere (`hf download {hub_id} --local-dir "
            "DIR`) and import DIR",
        ) from e


def _vllm_serves(architecture: str | None) -> bool | None:
    vllm = optional("vllm")
    if vllm is None or architecture is None:
        return None
    try:
        return architecture in set(vllm.ModelRegistry.get_supported_archs())
    except Exception:  # a vLLM that cannot list them here (no device): we do not know
        return None


def _size_bytes(folder: Path) -> int:
    files = {p for pattern in _WEIGHTS for p in folder.rglob(pattern)}
    return sum(p.stat().st_size for p in files)


def _memory_gb() -> dict[str, float]:
    out = {"ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)}
    torch = optional("torch")
    if torch is not None and torch.cuda.is_available():
        out["gpu_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    return out


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    if not slug:
        raise DataError(f"cannot name a model after {text!r}", hint="pass --name")
    return slug

