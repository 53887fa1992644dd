"""A model folder named as a gate candidate: asked again it is the same record; changed, a new one."""

from __future__ import annotations

import os
from pathlib import Path

from helpline.evaluation.regression.factory import resolve_model
from helpline.platform.context import Context
from helpline.platform.registry import Registry
from helpline.platform.settings import Settings


def test_a_candidate_folder_keeps_its_name_and_verdict_until_its_files_change(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    ctx = Context(Settings(workspace=tmp_path / "ws"), registry=registry)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    name = resolve_model(ctx, str(folder))
    registry.update_metadata(name, {"gate": {"passed": True}})
    assert resolve_model(ctx, str(folder)) == name  # a second gate run on the same folder
    assert registry.get_model(name).metadata["gate"]["passed"]
    weights = folder / "model.safetensors"
    weights.write_text("other weights")
    os.utime(weights, ns=(1, 1))
    changed = resolve_model(ctx, str(folder))
    assert changed != name and "gate" not in registry.get_model(changed).metadata
