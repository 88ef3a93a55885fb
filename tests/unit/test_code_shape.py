"""The library's functions stay short enough to read as named steps: at most 40 lines each.

A function's length runs from its `def` line to its last line, docstring included (decorators are
not counted). Complexity is ruff's job (C901 in pyproject.toml); length is checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[2] / "include"
MAX_LINES = 40


def _long_functions() -> list[tuple[str, str, int]]:
    """(function name, file, length) of every function or method under include/ longer than MAX_LINES."""
    found = []
    for path in sorted(INCLUDE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES:
                    found.append((node.name, str(path.relative_to(INCLUDE.parent)), length))
    return found


def test_include_holds_python_files():
    assert any(INCLUDE.rglob("*.py")), f"no Python files under {INCLUDE}"


def test_no_function_in_include_is_longer_than_40_lines():
    too_long = _long_functions()
    listing = "\n".join(f"  {name} in {file}: {length} lines" for name, file, length in too_long)
    assert not too_long, f"functions longer than {MAX_LINES} lines; split them into named steps:\n{listing}"
