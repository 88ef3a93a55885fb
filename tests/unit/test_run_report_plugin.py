"""The run report plugin costs a task process nothing, and a misplaced project costs the api-server only the report.

Every Airflow process loads the plugins folder, each task process included (for macros and listeners): loading it
must not import the report's web app (FastAPI, the api-server's security), which only the api-server mounts. Each
case runs in a fresh interpreter, loading plugins as Airflow's task runner does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from include.catalog_publisher.defaults import project_root

ROOT = project_root()
LOAD = """
import json, sys
from airflow.sdk import plugins_manager
plugins, errors = plugins_manager._get_plugins()
(report,) = [p for p in plugins if p.name == "catalog_publisher_run_report"]
loaded = "fastapi" in sys.modules
apps = report.fastapi_apps
print(json.dumps({"errors": errors, "fastapi_on_load": loaded, "apps": [[a["url_prefix"], type(a["app"]).__name__]
                  for a in apps]}))
"""


def _load_plugins(tmp_path, pythonpath: str, cwd) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")} | {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": pythonpath,
    }
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", LOAD], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr + done.stdout


def test_a_task_process_loads_the_plugin_without_the_web_app_and_the_api_server_gets_it(tmp_path):
    result, _ = _load_plugins(tmp_path, str(ROOT), cwd=ROOT)
    assert result["errors"] == {}
    assert result["fastapi_on_load"] is False
    assert result["apps"] == [["/catalog-publisher", "FastAPI"]]


def test_an_api_server_without_the_project_on_its_path_starts_without_the_report_and_says_why(tmp_path):
    result, output = _load_plugins(tmp_path, "", cwd=tmp_path)
    assert result["apps"] == []
    assert "the run report is off: No module named 'include'" in output
    assert "put the project root on the api-server's PYTHONPATH" in output
