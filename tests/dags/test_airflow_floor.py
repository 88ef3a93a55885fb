"""The Airflow floor: stated where users look (requirements files, docs), and an older Airflow fails to import
the DAGs with one error that names the version needed, simulated by taking away the symbol that 3.3 brought."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from packaging.version import Version

from include.catalog_publisher.dag_defaults import AIRFLOW_FLOOR
from include.catalog_publisher.defaults import project_root

# Airflow 3.2 as the DAG processor sees it: the version, and airflow.sdk without ExceptionRetryPolicy.
OLDER_AIRFLOW = """
import json, sys
import airflow, airflow.sdk as sdk

airflow.__version__ = "3.2.2"
lazy = sdk.__getattr__


def older(name):
    if name == "ExceptionRetryPolicy":
        raise AttributeError(f"module 'airflow.sdk' has no attribute {name!r}")
    return lazy(name)


sdk.__getattr__ = older
sdk.__dict__.pop("ExceptionRetryPolicy", None)
from airflow.dag_processing.dagbag import DagBag

print(json.dumps(DagBag(dag_folder=sys.argv[1]).import_errors))
"""


def test_an_older_airflow_fails_to_import_each_dag_with_one_error_naming_the_version_needed():
    done = subprocess.run(
        [sys.executable, "-c", OLDER_AIRFLOW, str(project_root() / "dags")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.splitlines()[-1])
    assert sorted(error.rsplit("/", 1)[-1] for error in errors) == [
        "index_product_catalog.py",
        "publish_product_images.py",
        "rebuild_product_index.py",
    ]
    for message in errors.values():
        last = message.strip().splitlines()[-1]
        assert last == (
            f"ImportError: catalog-publisher's DAGs need Apache Airflow {AIRFLOW_FLOOR} or newer (retry policies); "
            "this environment runs Airflow 3.2.2. Upgrade Airflow, or choose an Astro Runtime, MWAA or Cloud "
            "Composer version that runs Airflow 3.3 (docs/deploying.md)"
        ), message


def test_the_floor_is_stated_where_users_look_and_the_pins_meet_it():
    floor = Version(AIRFLOW_FLOOR)
    pinned = re.search(r"^apache-airflow==(\S+)$", (project_root() / "requirements.txt").read_text(), re.M)
    assert Version(pinned.group(1)) >= floor
    managed = (project_root() / "requirements-managed.txt").read_text()
    assert f"Apache Airflow {AIRFLOW_FLOOR} or newer" in managed
    assert not re.search(r"^apache-airflow[=<>~ ]", managed, re.M)  # the environment brings Airflow
    for doc in ("README.md", "docs/deploying.md"):
        assert f"Airflow {AIRFLOW_FLOOR}" in (project_root() / doc).read_text(), doc
