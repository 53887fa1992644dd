"""CLI fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpline.platform.workspace import Workspace


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """An empty workspace that the CLI uses (``HELPLINE_WORKSPACE``), with no other HELPLINE_ setting leaking in."""
    for key in [k for k in os.environ if k.startswith("HELPLINE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    return Workspace.at(tmp_path / "ws").ensure()
