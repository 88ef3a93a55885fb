"""DAG integrity: the files import cleanly, cheaply, without I/O, into the task graph docs/design.md fixes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from include.catalog_publisher.defaults import project_root

DAGS = project_root() / "dags"
PUBLISHER_EDGES = {
    ("build_manifest", "plan_batches"),
    ("build_manifest", "upload_batch"),  # the mapped task reads the manifest's images_dir
    ("plan_batches", "upload_batch"),
    ("upload_batch", "merge_url_mapping"),
    ("merge_url_mapping", "update_catalog"),
    ("update_catalog", "publish_to_kafka"),
    ("build_manifest", "update_catalog"),  # a date-partitioned run republishes only its own products
}

# Run in a fresh interpreter: start Airflow first (its own start-up I/O is not ours), then
# watch what importing the DAG file does through Python's audit hooks.
PARSE_PROBE = """
import importlib.util, json, sys
import airflow.sdk
from airflow.sdk import dag, task, Param, Asset
# Airflow initialises lazily, once per process, on the first DAG it builds: every provider's
# asset-URI handlers (boto3 among them), croniter (which runs `file` on the interpreter)...
# A dag-processor has done all that long before it parses our file, so a throwaway DAG does it here.
@dag(dag_id="warm_up", schedule="@daily", params={"p": Param(1, type="integer")})
def warm_up():
    @task(outlets=[Asset(name="warm-up", uri="kafka://warm-up/topic")])
    def t():
        pass
    t()
warm_up()
events = []
allowed = (sys.prefix, sys.base_prefix, sys.exec_prefix)
def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        path = args[0]
        if not path.startswith(allowed) and not path.endswith((".py", ".pyc")):
            events.append(f"open {path}")
    elif event in ("socket.connect", "socket.getaddrinfo", "subprocess.Popen", "os.system"):
        events.append(f"{event} {args[:2]!r}")
# Third-party clients, and the library modules that pull them in (include.catalog_publisher.assets is light).
heavy = ["obstore", "confluent_kafka", "elasticsearch", "ijson", "PIL", "include.catalog_publisher.upload", "include.catalog_publisher.manifest",
         "include.catalog_publisher.indexer", "include.catalog_publisher.publisher_tasks", "include.catalog_publisher.indexer_tasks"]
before = {m for m in heavy if m in sys.modules}
sys.addaudithook(hook)
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps({"io": events, "heavy_imports": sorted(m for m in heavy if m in sys.modules and m not in before)}))
"""


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "publish_product_images" in dagbag.dags


@pytest.mark.parametrize("dag_file", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_parsing_does_no_io_and_no_heavy_imports(dag_file):
    done = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(dag_file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe == {"io": [], "heavy_imports": []}


def test_the_parse_probe_catches_io_and_heavy_imports(tmp_path):
    bad = tmp_path / "bad_dag.py"
    bad.write_text("import include.catalog_publisher.upload\nopen('/etc/hostname').read()\n")
    done = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(bad)], capture_output=True, text=True, timeout=120)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["io"] == ["open /etc/hostname"]
    assert {"include.catalog_publisher.upload", "obstore"} <= set(probe["heavy_imports"])


def test_publisher_task_graph(dagbag):
    dag = dagbag.dags["publish_product_images"]
    edges = {(task.task_id, downstream) for task in dag.tasks for downstream in task.downstream_task_ids}
    assert edges == PUBLISHER_EDGES
    assert {t.task_id for t in dag.tasks} == {a for a, _ in PUBLISHER_EDGES} | {b for _, b in PUBLISHER_EDGES}


def test_upload_is_mapped_one_task_per_batch_with_labels(dagbag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = dagbag.dags["publish_product_images"]
    upload = dag.get_task("upload_batch")
    assert isinstance(upload, MappedOperator)
    assert upload.map_index_template == "{{ batch_label }}"
    assert all(not isinstance(t, MappedOperator) for t in dag.tasks if t.task_id != "upload_batch")


def test_publisher_params_have_defaults_titles_and_types(dagbag):
    dag = dagbag.dags["publish_product_images"]
    params = dag.params
    for name in ("images_dir", "catalog_file", "bucket", "prefix", "batch_size", "topic"):
        assert name in params, name
    for name in params:
        param = params.get_param(name)
        assert param.value is not None and param.schema.get("type"), name
    assert (params["images_dir"], params["catalog_file"], params["prefix"], params["topic"]) == ("data/images", "data/products.json", "products", "products")
    assert params["batch_size"] >= 1


def test_publish_announces_the_topic_asset(dagbag):
    dag = dagbag.dags["publish_product_images"]
    outlets = dag.get_task("publish_to_kafka").outlets
    assert [o.uri for o in outlets] == ["kafka://kafka_default/products"]


def test_dag_files_are_thin():
    for dag_file in DAGS.glob("*.py"):
        text = Path(dag_file).read_text()
        top_level_imports = [line for line in text.splitlines() if line.startswith(("import ", "from ")) and "__future__" not in line]
        allowed = ("import os", "from datetime", "from airflow", "from include.catalog_publisher.assets")
        assert all(line.startswith(allowed) for line in top_level_imports), top_level_imports


def test_indexer_is_scheduled_on_the_published_topic_and_verifies_after_indexing(dagbag):
    from include.catalog_publisher.assets import PRODUCTS_TOPIC

    dag = dagbag.dags["index_product_catalog"]
    edges = {(task.task_id, downstream) for task in dag.tasks for downstream in task.downstream_task_ids}
    assert edges == {("index_from_kafka", "verify_index")}
    assert list(dag.timetable.asset_condition.objects) == [PRODUCTS_TOPIC]
    assert dag.max_active_runs == 1
    assert (dag.params["topic"], dag.params["index"]) == ("products", "products")
