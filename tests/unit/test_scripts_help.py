"""Every script answers --help (or -h) with its help, exit 0, and nothing else: no stack started, no Airflow
database made, no file written, whatever the arguments before it (`stack.py run --help` used to start the stack)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devstack.embedded_stack import default_state_dir
from include.catalog_publisher.defaults import project_root

SCRIPTS = sorted(str(p.relative_to(project_root())) for p in (project_root() / "scripts").rglob("*.py"))
CALLS = [[script, "--help"] for script in SCRIPTS] + [
    ["scripts/stack.py", "run", "--help"],
    ["scripts/stack.py", "env", "-h"],
    ["scripts/dev_airflow.py", "ui", "--help"],
]


@pytest.mark.parametrize("call", CALLS, ids=[" ".join(c) for c in CALLS])
def test_a_script_answers_help_and_does_nothing_else(call, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    stack_state = default_state_dir() / "stack.json"
    before = stack_state.stat().st_mtime_ns if stack_state.exists() else None
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CATALOG_PUBLISHER_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, *call], cwd=project_root(), env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout.lower() or call[0].endswith("dev_airflow.py") and "Run Airflow" in done.stdout
    assert list(home.iterdir()) == []  # no .airflow/, no data/
    assert (stack_state.stat().st_mtime_ns if stack_state.exists() else None) == before  # no stack started
