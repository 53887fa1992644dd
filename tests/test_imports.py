"""`import helpline` and `import helpline.platform` must stay light (no torch, vllm, chromadb, streamlit)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import helpline

HEAVY = ("torch", "vllm", "chromadb", "streamlit", "transformers", "sentence_transformers", "mlflow")


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


def function_body_imports(source: str) -> list[str]:
    """``import`` statements inside functions: each is a dependency nobody sees at the module's top."""
    tree = ast.parse(source)
    return [
        ast.unparse(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]


def test_imports_sit_at_module_top_and_heavy_libraries_load_through_require() -> None:
    """A module states its dependencies at its top (lint-imports sees them all); a heavy optional library
    is loaded where it is used through ``require`` (or ``optional``), which names the extra to install."""
    package = Path(helpline.__file__).parent
    found = {
        str(p.relative_to(package)): hidden
        for p in sorted(package.rglob("*.py"))
        if (hidden := function_body_imports(p.read_text(encoding="utf-8")))
    }
    assert found == {}
    assert function_body_imports("def f():\n    import torch\n") == ["import torch"]  # the check can fail
