"""The model and data packages sit below the steps and import what they use of the project at
module level: an import cycle between them then fails at import time instead of hiding in a
function-level import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pruneflow"


def _function_level_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                    "pruneflow"
                ):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{inner.lineno}")
    return found


def test_models_and_data_import_the_project_at_module_level():
    files = sorted([*(PACKAGE / "models").glob("*.py"), *(PACKAGE / "data").glob("*.py")])
    assert len(files) > 5
    assert [hit for path in files for hit in _function_level_imports(path)] == []


def test_the_model_sources_import_first_without_a_cycle():
    # each module first in a fresh interpreter: a cycle through it would fail here
    for module in ("pruneflow.models.sources", "pruneflow.data.datasets"):
        result = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-2000:]
