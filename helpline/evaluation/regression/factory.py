"""Build responders for a registered model (or an adapter folder) from settings.

The factory rule, the same in every ``factory`` module: a factory takes the :class:`Context` first and
what it is asked for as keyword arguments; ``open_<thing>`` returns a part over on-disk state that it keeps
and changes (the knowledge base), ``build_<thing>`` composes anything else. ``resolve_model`` is no
factory (it names a model), but takes the context too: a folder is registered in its registry. The
embedder for reference similarity is retrieval's ``build_embedder(ctx, backend="torch")``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from helpline.answering.prompts import load_prompt
from helpline.evaluation.regression.runner import DirectResponder, RAGResponder
from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.files import has_chat_template
from helpline.serving.factory import build_generator, build_pipeline

Mode = Literal["rag", "direct"]


def resolve_model(ctx: Context, alias_or_path: str) -> str:
    """A registry name for ``alias_or_path``, a chat model; a folder is registered (as adapter or base)
    first. An embedder, a detector or a model folder without a chat template is refused before
    anything is registered or answered.

    A folder's name follows its files (names, sizes, modification times): asked again unchanged, it is
    the record registered before, gate verdict included; changed, it is a new name, so no verdict carries
    over to other weights (the registry never gives a registered name new weights)."""
    path = Path(alias_or_path)
    if not path.is_dir():
        return ctx.registry.chat_model(alias_or_path).name
    adapter_cfg = path / "adapter_config.json"
    name = f"candidate-{_fingerprint(path)}"
    if any(m.name == name and m.path == str(path.resolve()) for m in ctx.registry.list_models()):
        return name
    if adapter_cfg.exists():
        base_ref = json.loads(adapter_cfg.read_text()).get("base_model_name_or_path", "")
        base = _base_for(ctx, base_ref)
        ctx.registry.register_model(
            name, kind="adapter", path=path.resolve(), base_model=base, metadata={"source": "gate"}
        )
    elif (path / "config.json").exists():
        if not has_chat_template(path):
            raise ConfigError(
                f"{path} has no chat template, so it is not a chat model (an embedder or a detector?)",
                hint="pass a chat model's folder (with chat_template.jinja or a chat_template in "
                "tokenizer_config.json), an adapter folder, or a registry name",
            )
        ctx.registry.register_model(name, kind="base", path=path.resolve(), metadata={"source": "gate"})
    else:
        raise NotFoundError(
            f"{path} is neither a model nor a PEFT adapter folder",
            hint="pass a registry name/alias, or a folder with config.json or adapter_config.json",
        )
    return name


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha1(str(folder.resolve()).encode())
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"\0{file.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:8]


def _base_for(ctx: Context, base_ref: str) -> str:
    for record in ctx.registry.list_models(kind="base"):
        if base_ref in (record.name, record.path) or Path(base_ref).name == Path(record.path).name:
            return record.name
    raise NotFoundError(
        f"the adapter's base model {base_ref!r} is not registered",
        hint="import or register the base model first (`helpline models import`)",
    )


def build_responder(ctx: Context, *, model: str, mode: Mode = "rag", max_tokens: int | None = None):
    """A RAG or direct responder answering with ``model`` (name, alias or folder)."""

    name = resolve_model(ctx, model)
    answering = ctx.with_settings(chat_model=name)
    generator = build_generator(answering)
    tokens = max_tokens or answering.settings.generation.max_new_tokens
    if mode == "direct":
        return DirectResponder(generator, load_prompt("support"), max_tokens=tokens, name=f"{name} (direct)")
    pipeline = build_pipeline(answering, generator=generator)
    pipeline.max_tokens = tokens
    return RAGResponder(pipeline, name=name)
