"""Shared fixtures. Integration fixtures build a real workspace once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpline.testing.postgres import INSTALL, PostgresServer, postgres_bin

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HELPLINE_SHARED_DATA", REPO.parent / "shared" / "data"))

# Run tracking stays off unless a test asks for it (tests/platform/test_tracking.py and the tests beside it): each
# new workspace's MLflow store costs seconds to create, and most tests train in a new workspace.
os.environ.setdefault("HELPLINE_TRACKING__ENABLED", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data when present (CI has it); data-driven tests skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def workspace_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where `helpline init` has run (real SmolLM2, MiniLM, Chroma). Integration only.

    Set HELPLINE_TEST_WORKSPACE to reuse an initialised folder between runs while developing.
    """
    reuse = os.environ.get("HELPLINE_TEST_WORKSPACE")
    root = Path(reuse) if reuse else tmp_path_factory.mktemp("ws")
    if not (root / ".helpline" / "registry.sqlite").exists():
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
        subprocess.run([sys.executable, "-m", "helpline", "init"], cwd=root, env=env, check=True, capture_output=True)
    return root


@pytest.fixture
def in_workspace(workspace_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside the initialised workspace folder, with default settings."""
    for key in list(os.environ):
        if key.startswith("HELPLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(workspace_dir)
    return workspace_dir


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the session (Debian's `postgresql`; see helpline/testing/postgres.py);
    ``postgres.new_database()`` gives a test an empty database of its own. Skips where it is not installed."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'helpline[shared]')")
    if postgres_bin() is None:
        pytest.skip(f"PostgreSQL is not installed ({INSTALL})")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
