"""docs/faults.md, generated from the tests: every test marked `@pytest.mark.fault(what, outcome)`
becomes a row. `make faults-table` rewrites the file; tests/test_fault_table.py fails when it is stale."""

from __future__ import annotations

import ast
from pathlib import Path

from include.catalog_publisher.defaults import project_root

TABLE = project_root() / "docs" / "faults.md"
HEADER = """# Faults and bad input, and what happens

Every row is a test that provokes the fault for real and asserts the outcome: services of the
embedded stack (SeaweedFS, Tansu, osmem) killed and restarted, a process killed with SIGKILL, a 1 MB
tmpfs filled up, files and manifests written to be hostile, and a loopback HTTP proxy in front of the
real server that answers some requests the way a throttled S3 (503 SlowDown) or a saturated
Elasticsearch (429 per item) does. Nothing in these tests replaces the project's code with a mock.
Generated from the tests' `@pytest.mark.fault` markers by `make faults-table`;
`tests/test_fault_table.py` fails when this file and the tests disagree.

| fault or bad input | outcome | test |
|---|---|---|
"""


def _fault_marks(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.fault":
                what, outcome = (ast.literal_eval(arg) for arg in decorator.args)
                rows.append((what, outcome, f"`{path.relative_to(project_root()).as_posix()}::{node.name}`"))
    return rows


def rows() -> list[tuple[str, str, str]]:
    tests = project_root() / "tests"
    return [row for path in sorted(tests.rglob("test_*.py")) for row in _fault_marks(path)]


def render() -> str:
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    return HEADER + "".join(f"| {cell(what)} | {cell(outcome)} | {test} |\n" for what, outcome, test in rows())


if __name__ == "__main__":
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text(render(), encoding="utf-8")
    print(f"wrote {TABLE} ({len(rows())} rows)")
