"""The DAGs import and run where users deploy them without `pip install -e .`: an Astro CLI project, and the
official image with the project at AIRFLOW_HOME. Both put the project root on the path and install only
requirements.txt; the project is copied into such a folder and used from a Python that refuses to import
anything requirements.txt does not bring (the test tools, the embedded stack's wheels, Pillow, devstack/).
There the publisher runs, then the indexer on what it published, both with dag.test()."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from include.catalog_publisher import env_clients
from include.catalog_publisher.defaults import project_root
from tests.helpers import s3_client, write_catalog, write_image


def runtime_distributions() -> set[str]:
    """requirements.txt and everything it pulls in, by the installed distributions' own metadata."""
    wanted = [
        Requirement(line)
        for line in (project_root() / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    seen: set[str] = set()
    while wanted:
        req = wanted.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            dep = Requirement(line)
            extras = [""] + sorted(req.extras)
            if dep.marker is None or any(dep.marker.evaluate({"extra": extra}) for extra in extras):
                wanted.append(dep)
    return seen


def development_only_modules() -> list[str]:
    """Top-level modules of installed distributions that requirements.txt does not bring."""
    runtime = runtime_distributions()
    modules = {"devstack", "tests"}
    for module, dists in metadata.packages_distributions().items():
        if all(d.lower().replace("_", "-") not in runtime for d in dists):
            modules.add(module)
    return sorted(modules)


CHECK = textwrap.dedent(
    """
    import importlib.abc, json, os, sys
    BLOCKED = set(json.loads(os.environ["BLOCKED_MODULES"]))

    class RefuseDevelopmentModules(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (not installed by requirements.txt)")
            return None

    sys.meta_path.insert(0, RefuseDevelopmentModules())
    from airflow.dag_processing.dagbag import DagBag
    from airflow import plugins_manager
    import include.catalog_publisher.defaults as defaults

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    plugins_manager.ensure_plugins_loaded()
    result = {"dags": sorted(bag.dags), "errors": {k: v[-500:] for k, v in bag.import_errors.items()},
              "plugin_errors": plugins_manager.get_import_errors(), "root": str(defaults.project_root())}
    def returned(run, task_id):
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            query = XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value")
            row = session.scalars(query).first()
            return XComModel.deserialize_value(row) if row is not None else None

    if os.environ.get("RUN_PUBLISHER"):
        conf = json.loads(os.environ["RUN_PUBLISHER"])
        run = bag.dags["publish_product_images"].test(run_conf=conf)
        result["run"] = str(run.state)
        if os.environ.get("RUN_INDEXER") and result["run"] == "success":
            # What a publish's asset event hands the indexer: its topic and the catalog copy of its run.
            published = {"topic": conf["topic"], "catalog_file": returned(run, "update_catalog")["catalog"]}
            indexed = bag.dags["index_product_catalog"].test(
                run_conf={**json.loads(os.environ["RUN_INDEXER"]), **published}
            )
            result["index_run"] = str(indexed.state)
            result["catalog"] = published["catalog_file"]
            result["indexed"] = returned(indexed, "indexing_totals")
            result["verified"] = returned(indexed, "verify_index")
    print("RESULT " + json.dumps(result))
    """
)


def test_the_dags_import_and_run_in_a_project_root_on_the_path_with_only_requirements_installed(stack, tmp_path):
    project = tmp_path / "usr-local-airflow"  # an Astro project; /opt/airflow in the official image
    for part in ("dags", "include", "plugins"):
        shutil.copytree(project_root() / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(project_root() / "requirements.txt", project / "requirements.txt")
    for i in range(3):
        write_image(project / "data" / "images" / f"PROD-{i}.jpg", seed=i)
    write_catalog(project / "data" / "products.json", [{"product_id": f"PROD-{i}", "name": f"P{i}"} for i in range(3)])
    bucket = f"astro-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    index = f"astro-{uuid.uuid4().hex[:8]}"

    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(project),
        "AIRFLOW_HOME": str(project),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "BLOCKED_MODULES": json.dumps(development_only_modules()),
        "RUN_PUBLISHER": json.dumps({"bucket": bucket, "topic": f"astro-{uuid.uuid4().hex[:8]}", "batch_size": 2}),
        # What this deployment's runs may write: its bucket (any prefix), its topics and its index.
        "PUBLISHER_ALLOWED_OUTPUTS": f"s3://{bucket},kafka://astro-*,elasticsearch://{index}",
        "RUN_INDEXER": json.dumps({"index": index, "group_id": f"astro-{uuid.uuid4().hex[:8]}"}),
        **{k: v for k, v in stack.env().items() if k.startswith("AIRFLOW_CONN_")},
    }
    migrated = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, cwd=project, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))

    assert result["errors"] == {} and result["plugin_errors"] == {}
    assert result["dags"] == ["index_product_catalog", "publish_product_images", "rebuild_product_index"]
    assert result["root"] == str(project)  # relative paths (data/...) resolve inside the project
    assert result["run"] == "success"
    mapping = json.loads((project / "data" / "s3_url_mapping.json").read_text())
    assert mapping["uploaded_images"] == 3 and sorted(mapping["product_to_s3_url"]) == ["PROD-0", "PROD-1", "PROD-2"]

    # The indexer, in the same layout, on what the publisher published: its topic and its run's catalog.
    assert result["index_run"] == "success", result
    catalog = project / result["catalog"]  # the run's copy (an absolute path stays as it is)
    assert catalog.is_file() and catalog.resolve().is_relative_to(project.resolve()), result["catalog"]
    assert result["indexed"]["consumed"] == result["indexed"]["indexed"] == 3
    assert result["verified"]["verified"] == 3
    es = env_clients.elasticsearch(stack.elasticsearch_url)
    assert es.count(index=index)["count"] == 3
    for product_id, url in mapping["product_to_s3_url"].items():
        assert es.get(index=index, id=product_id)["_source"]["image_url"] == url
    assert "PIL" in json.loads(env["BLOCKED_MODULES"]) and "pytest" in json.loads(env["BLOCKED_MODULES"])
