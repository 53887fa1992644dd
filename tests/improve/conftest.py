"""The loop's fixture: a temporary workspace with production on a base model, and fakes for the loop's parts."""

from __future__ import annotations

from pathlib import Path

import pytest
from improve_support import BALANCED, Clock, FakeArms, FakeGate, FakeTraining, Loop

from helpline.platform.context import Context
from helpline.platform.settings import Settings
from helpline.serving.gateway.store import GatewayStore


@pytest.fixture
def loop(tmp_path: Path) -> Loop:
    ctx = Context(Settings(workspace=tmp_path / ".helpline"))
    (tmp_path / "base").mkdir()
    ctx.registry.register_model("base", kind="base", path=tmp_path / "base")
    ctx.registry.set_alias("production", "base", actor="init")
    store = GatewayStore(ctx.workspace.root / "gateway.sqlite")
    return Loop(ctx, store, FakeTraining(ctx), FakeGate(), FakeArms([(BALANCED, BALANCED)]), Clock())
