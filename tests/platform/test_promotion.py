from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpline.platform import promotion
from helpline.platform.errors import NotFoundError
from helpline.platform.promotion import GateError
from helpline.platform.registry import Registry


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    return subprocess.run([sys.executable, "-m", "helpline", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_cli_promotes_only_models_that_passed_their_gate(tmp_path: Path) -> None:
    registry = Registry(tmp_path / ".helpline" / "registry.sqlite")
    registry.register_model("base", kind="base", path=tmp_path / "b")
    registry.register_model("good", kind="adapter", path=tmp_path / "g", base_model="base")
    registry.register_model("bad", kind="adapter", path=tmp_path / "x", base_model="base")
    registry.update_metadata("good", {"gate": {"passed": True, "report": "r.html"}})
    registry.update_metadata("bad", {"gate": {"passed": False, "failed_checks": ["support.pass_rate"]}})
    registry.set_alias("production", "base")

    refused = _cli(tmp_path, "models", "promote", "bad")
    assert refused.returncode != 0
    assert "support.pass_rate" in refused.stderr and "helpline eval gate" in refused.stderr
    assert registry.aliases()["production"] == "base"

    assert _cli(tmp_path, "models", "promote", "good").returncode == 0
    assert registry.aliases()["production"] == "good"
    assert _cli(tmp_path, "models", "promote", "bad", "--force").returncode == 0
    assert registry.alias_history("production")[-1].actor == "cli:forced"
    assert _cli(tmp_path, "models", "rollback").returncode == 0
    assert registry.aliases()["production"] == "good"


def test_update_metadata_keeps_creation_time(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    first = registry.register_model("m", kind="base", path=tmp_path, metadata={"a": 1})
    updated = registry.update_metadata("m", {"b": 2})
    again = registry.get_model("m")
    assert again.metadata == {"a": 1, "b": 2} == updated.metadata
    assert again.created_at == first.created_at


def test_a_rollback_past_the_last_promotion_needs_a_passing_gate(tmp_path: Path) -> None:
    """The review's case: promote, roll back, roll back again. The second rollback used to put the model just
    rolled back live again, without its gate; it now walks further back, under the promotion rule."""
    registry = Registry(tmp_path / "r.sqlite")
    registry.register_model("base", kind="base", path=tmp_path / "b")
    registry.register_model("good", kind="adapter", path=tmp_path / "g", base_model="base")
    registry.register_model("bad", kind="adapter", path=tmp_path / "x", base_model="base")
    registry.update_metadata("good", {"gate": {"passed": True, "report": "r.html"}})
    registry.set_alias("production", "base", actor="init")
    registry.set_alias("production", "good")
    registry.set_alias("production", "bad", actor="cli:forced")

    assert promotion.rollback(registry, "production", actor="test").model_name == "good"  # undoes bad's promotion
    with pytest.raises(GateError, match="no gate report") as err:
        promotion.rollback(registry, "production", actor="test")  # base was never gated
    assert "helpline models promote base --force" in err.value.hint
    assert registry.aliases()["production"] == "good"

    registry.set_alias("production", "bad", actor="cli:forced")
    assert promotion.rollback(registry, "production", actor="test").model_name == "good"
    registry.update_metadata("base", {"gate": {"passed": True}})
    assert promotion.rollback(registry, "production", actor="test").model_name == "base"
    with pytest.raises(NotFoundError, match="no earlier model"):
        promotion.rollback(registry, "production", actor="test")
    assert registry.aliases()["production"] == "base"
