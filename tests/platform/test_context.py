"""The context every factory takes: settings, and the workspace and registry they name (or given ones)."""

from __future__ import annotations

from pathlib import Path

from helpline.platform.context import Context
from helpline.platform.registry import Registry
from helpline.platform.settings import Settings


def test_a_context_opens_the_workspace_its_settings_name_only_when_asked(tmp_path: Path) -> None:
    ctx = Context(Settings(workspace=tmp_path / "ws"))
    assert not (tmp_path / "ws").exists()  # building a context touches nothing
    ctx.registry.register_model("m", kind="base", path=tmp_path)
    assert Registry(tmp_path / "ws" / "registry.sqlite").get_model("m").kind == "base"


def test_a_given_registry_is_used_instead_of_the_workspaces(tmp_path: Path) -> None:
    copy = Registry(tmp_path / "copy.sqlite")
    ctx = Context(Settings(workspace=tmp_path / "ws"), registry=copy)
    ctx.registry.register_model("bench-only", kind="base", path=tmp_path)
    assert copy.get_model("bench-only").kind == "base"
    assert [m.name for m in Registry(ctx.workspace.registry_db).list_models()] == []  # the workspace's is untouched


def test_with_settings_changes_the_settings_and_keeps_workspace_and_registry(tmp_path: Path) -> None:
    copy = Registry(tmp_path / "copy.sqlite")
    ctx = Context(Settings(workspace=tmp_path / "ws", chat_model="prod"), registry=copy)
    other = ctx.with_settings(chat_model="candidate")
    assert (other.settings.chat_model, ctx.settings.chat_model) == ("candidate", "prod")
    assert other.registry is copy and other.workspace is ctx.workspace
