"""`import helpline` and `import helpline.platform` must stay light (no torch, vllm, chromadb, streamlit)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "vllm", "chromadb", "streamlit", "transformers", "sentence_transformers")


@pytest.mark.parametrize("module", ["helpline", "helpline.platform", "helpline.platform.schemas", "helpline.cli.app"])
def test_core_imports_pull_in_no_heavy_dependency(module: str) -> None:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not [m for m in HEAVY if m in loaded], f"{module} imported heavy modules"


def test_import_check_detects_a_heavy_import() -> None:
    """The check above is able to fail: importing a heavy area module does load chromadb."""
    code = "import json, sys; import chromadb; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "chromadb" in json.loads(out)
