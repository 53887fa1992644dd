"""The training half of `helpline improve`: the loop's mix as a dataset `train sft` reads, and the recipes run
through their Python APIs (no subprocess).

`train sft` reads a prepared dataset folder (``train.jsonl``, ``validation.jsonl`` and a ``manifest.json`` with
``name``, ``version`` and ``dataset_hash``), not the loop's ``sft.jsonl``: :func:`write_sft_dataset` writes one.
The folder is also what the exported adapter's lineage names as its ``dataset``, so that the next loop replays
rows of it (``training/loop/mix.py``, ``replay_source``): a loop's model keeps the behaviour of the one before.

SFT cannot start from an adapter, so the SFT step trains a fresh adapter on the production model's base, on a mix
that holds replay rows of production's own dataset; preference tuning then continues that adapter.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Protocol

from helpline.platform.context import Context
from helpline.platform.errors import DataError
from helpline.platform.files import read_jsonl
from helpline.training.export import export_adapter
from helpline.training.preference import load_preference_config, train_preference
from helpline.training.sft.config import load_config
from helpline.training.sft.trainer import run_sft

VALIDATION_SHARE = 0.1


class Training(Protocol):
    """The three training parts a loop runs; each returns the summary its recipe returns."""

    def sft(self, dataset: Path, out_dir: Path, *, base_model: str) -> dict[str, Any]:
        """Train a fresh adapter on ``base_model`` over the prepared dataset folder ``dataset`` into ``out_dir``."""
        ...

    def preference(
        self, pairs: Path, out_dir: Path, *, base_model: str, init_adapter: Path, eval_pairs: Path | None = None
    ) -> dict[str, Any]:
        """Continue ``init_adapter`` on the preference pairs of ``pairs`` into ``out_dir``; with ``eval_pairs``, how
        often the model prefers their chosen answer before and after (the summary's ``eval``)."""
        ...

    def export(self, run_dir: Path, *, name: str) -> dict[str, Any]:
        """The export gate on ``run_dir/adapter``; registers it as ``name`` when it passes (raises when not)."""
        ...


def write_sft_dataset(sft: Path, out_dir: Path, *, name: str, loop_manifest: Path, seed: int) -> dict[str, Any]:
    """The loop's ``sft.jsonl`` as a prepared dataset folder (see the module docstring): a seeded tenth (at least
    one row) for validation, the rest for training. A single row is both (noted in the manifest: its validation
    loss then says only that training ran). Returns the lineage `train sft` records (path, name, version, hash)."""
    rows = read_jsonl(sft, required=("messages",))
    if not rows:
        raise DataError(f"{sft} has no rows to train on", hint="collect some staff corrections first")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(VALIDATION_SHARE * len(rows))) if len(rows) > 1 else 0
    validation = [rows[i] for i in order[:n_val]] or rows
    train = [rows[i] for i in order[n_val:]]
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = {"train.jsonl": _jsonl(train), "validation.jsonl": _jsonl(validation)}
    for file, text in texts.items():
        (out_dir / file).write_text(text, encoding="utf-8")
    digest = _sha256("".join(_sha256(t) for t in texts.values()))
    manifest = {
        "name": name,
        "version": "v1",
        "dataset_hash": digest,
        "source": {"kind": "improve", "manifest": str(loop_manifest), "sft": str(sft)},
        "counts": {"train": len(train), "validation": len(validation)},
        "validation_overlaps_train": len(rows) == 1,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return {"path": str(out_dir), "name": name, "version": "v1", "hash": digest, "rows": len(rows)}


class RecipeTraining:
    """:class:`Training` through the recipes' Python APIs, with the presets and step counts of the options."""

    def __init__(
        self,
        ctx: Context,
        *,
        sft_config: str,
        sft_steps: int | None,
        sft_set: list[str],
        pref_config: str,
        pref_steps: int | None,
        pref_set: list[str],
        method: str,
        console: Any = None,
    ) -> None:
        self.ctx = ctx
        self.sft_config, self.sft_steps, self.sft_set = sft_config, sft_steps, list(sft_set)
        self.pref_config, self.pref_steps, self.pref_set = pref_config, pref_steps, list(pref_set)
        self.method = method
        self.console = console

    def sft_overrides(self, dataset: Path, out_dir: Path, *, base_model: str) -> list[str]:
        """The preset's overrides: the options' own, then what the loop decides (where to read and write, the base
        model, no export of its own: the loop exports the final adapter once), then the step count."""
        fixed = [
            f"dataset={dataset}",
            f"output_dir={out_dir}",
            f"base_model={base_model}",
            "export=false",
            "resume=false",
            "overwrite=false",
            "adapter_name=null",
        ]
        overrides = [*self.sft_set, *fixed]
        if self.sft_steps is not None:
            preset, _ = load_config(self.sft_config, overrides)
            looks = -(-self.sft_steps // preset.eval_steps)  # as many evaluations as the preset's spacing gives
            every = -(-self.sft_steps // looks)  # spread evenly, so the last one falls at (or near) the last step
            warmup = min(preset.warmup_steps, self.sft_steps // 10)
            overrides += [
                f"max_steps={self.sft_steps}",
                f"eval_steps={every}",
                f"save_steps={every}",
                f"warmup_steps={warmup}",
            ]
        return overrides

    def sft(self, dataset: Path, out_dir: Path, *, base_model: str) -> dict[str, Any]:
        cfg, preset = load_config(self.sft_config, self.sft_overrides(dataset, out_dir, base_model=base_model))
        return run_sft(cfg, preset=preset, ctx=self.ctx, console=self.console)

    def pref_overrides(self, out_dir: Path, *, base_model: str, init_adapter: Path) -> list[str]:
        """The preference preset's overrides: the options' own, then the loop's (continue ``init_adapter``)."""
        fixed = [
            f"base_model={base_model}",
            f"init_adapter={init_adapter}",
            f"method={self.method}",
            f"output_dir={out_dir}",
            "export=false",
            "overwrite=false",
            "adapter_name=null",
        ]
        steps = [f"max_steps={self.pref_steps}"] if self.pref_steps is not None else []
        return [*self.pref_set, *fixed, *steps]

    def preference(
        self, pairs: Path, out_dir: Path, *, base_model: str, init_adapter: Path, eval_pairs: Path | None = None
    ) -> dict[str, Any]:
        overrides = self.pref_overrides(out_dir, base_model=base_model, init_adapter=init_adapter)
        cfg, preset = load_preference_config(self.pref_config, overrides)
        return train_preference(cfg, pairs, ctx=self.ctx, preset=preset, console=self.console,
                                eval_pairs_path=eval_pairs)  # fmt: skip

    def export(self, run_dir: Path, *, name: str) -> dict[str, Any]:
        return export_adapter(run_dir, ctx=self.ctx, name=name, console=self.console)


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
