"""`helpline backup DEST` and `helpline restore SRC`: the root commands over the configured workspace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpline.cli.app import app
from helpline.platform.errors import ConfigError
from helpline.platform.registry import Registry
from helpline.platform.workspace import Workspace
from helpline.serving.factory import gateway_db
from helpline.serving.gateway.store import GatewayStore


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    for key in [k for k in os.environ if k.startswith("HELPLINE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    ws = Workspace.at(tmp_path / ".helpline").ensure()  # the default `workspace` setting
    (ws.adapters / "support-v1").mkdir()
    (ws.adapters / "support-v1" / "adapter_model.safetensors").write_bytes(b"\x00" * 512)
    Registry(ws.registry_db).register_model("support-v1", kind="adapter", path=ws.adapters / "support-v1")
    return ws


def test_backup_then_restore_into_a_new_folder(workspace: Workspace, tmp_path: Path) -> None:
    key, _ = GatewayStore(gateway_db(workspace)).create_key("customer", name="alice")
    backed = CliRunner().invoke(app, ["backup", str(tmp_path / "bk"), "--json"])
    assert backed.exit_code == 0, backed.output
    assert "adapters/support-v1/adapter_model.safetensors" in {f["path"] for f in json.loads(backed.stdout)["files"]}

    restored = CliRunner().invoke(app, ["restore", str(tmp_path / "bk"), "--to", str(tmp_path / "copy")])
    assert restored.exit_code == 0, restored.output
    assert "HELPLINE_WORKSPACE=" in restored.output
    copy = Workspace.at(tmp_path / "copy")
    assert GatewayStore(gateway_db(copy)).lookup(key) is not None
    assert Registry(copy.registry_db).get_model("support-v1").path == str(copy.adapters / "support-v1")


def test_restore_over_the_configured_workspace_needs_force(workspace: Workspace, tmp_path: Path) -> None:
    assert CliRunner().invoke(app, ["backup", str(tmp_path / "bk")]).exit_code == 0
    refused = CliRunner().invoke(app, ["restore", str(tmp_path / "bk")])
    assert isinstance(refused.exception, ConfigError) and "--force" in str(refused.exception.hint)
    forced = CliRunner().invoke(app, ["restore", str(tmp_path / "bk"), "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["workspace"] == str(workspace.root)
    assert Registry(workspace.registry_db).get_model("support-v1").path == str(workspace.adapters / "support-v1")
