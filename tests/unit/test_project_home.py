"""The project home when the project is copied elsewhere (an image's AIRFLOW_HOME, an Astro project): the
package is never installed, so the folder holding include/ is the home unless CATALOG_PUBLISHER_HOME says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.run_artifacts import run_folder

PROBE = (
    "import json, include.catalog_publisher.defaults as d, include.catalog_publisher.run_artifacts as r; "
    "print(json.dumps({'module': d.__file__, 'root': str(d.project_root()), 'home': str(d.project_home()), "
    "'runs': str(r.RunArtifacts('dag', 'run', 'data/runs').dir), 'data': str(d.resolve('data/images'))}))"
)


@pytest.fixture
def copied(tmp_path):
    """include/ copied into another project folder, as the Dockerfile copies it into AIRFLOW_HOME."""
    project = tmp_path / "opt" / "airflow"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(project_root() / "include", project / "include", ignore=ignore)
    return project


def probe(project, cwd, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("CATALOG_PUBLISHER_HOME", "PYTHONPATH")}
    env = {**clean, "PYTHONPATH": str(project), **env}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_copy_of_the_project_is_its_own_home_from_any_working_directory(copied, tmp_path):
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    found = probe(copied, elsewhere)
    assert found["module"].startswith(str(copied / "include"))  # the copy, not this checkout
    assert found["root"] == found["home"] == str(copied)
    assert found["runs"] == str(copied / "data" / "runs" / run_folder("dag", "run"))
    assert found["data"] == str(copied / "data" / "images")


def test_catalog_publisher_home_wins_over_where_the_code_is(copied, tmp_path):
    home = tmp_path / "srv" / "catalog"
    found = probe(copied, tmp_path, CATALOG_PUBLISHER_HOME=str(home))
    assert found["root"] == str(copied)
    assert found["home"] == str(home)
    assert found["runs"] == str(home / "data" / "runs" / run_folder("dag", "run"))
    assert found["data"] == str(home / "data" / "images")
