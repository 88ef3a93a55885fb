"""DAG integrity: the files import cleanly, cheaply, without I/O, into the task graph docs/design.md fixes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from include.catalog_publisher import defaults
from include.catalog_publisher.dag_defaults import (
    DEFAULT_ARGS,
    RETRY_POLICY,
    START_DATE,
    TIMEZONE,
    lookback_days,
    manifest_shards,
)
from include.catalog_publisher.defaults import project_root
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.params import indexer_params, param_defaults, publisher_params, rebuild_params

DAGS = project_root() / "dags"
PUBLISHER_EDGES = {
    ("build_manifest", "plan_batches"),  # the shards' manifests, merged there
    ("plan_batches", "upload_batch"),  # the batches, and the merged manifest's images_dir
    ("upload_batch", "merge_url_mapping"),
    ("merge_url_mapping", "update_catalog"),
    ("update_catalog", "publish_to_kafka"),
    ("plan_batches", "update_catalog"),  # a flat run's held products; whether the run is dated
    ("plan_batches", "publish_to_kafka"),  # a dated run's scan: images of products gone with their file
    ("publish_to_kafka", "delete_removed_images"),  # objects go only once the catalog without them is out
    ("plan_batches", "delete_removed_images"),  # what the folder still holds
    ("update_catalog", "delete_removed_images"),  # which products the catalog still has
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
heavy = ["obstore", "confluent_kafka", "elasticsearch", "ijson", "PIL",
         "include.catalog_publisher.upload", "include.catalog_publisher.manifest",
         "include.catalog_publisher.indexer", "include.catalog_publisher.publisher_tasks",
         "include.catalog_publisher.indexer_tasks"]
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
    done = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(dag_file)], capture_output=True, text=True, timeout=120
    )
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


def test_upload_is_mapped_one_task_per_batch_and_the_manifest_one_per_shard_with_labels(dagbag):
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    dag = dagbag.dags["publish_product_images"]
    upload, manifest = dag.get_task("upload_batch"), dag.get_task("build_manifest")
    assert isinstance(upload, MappedOperator) and isinstance(manifest, MappedOperator)
    assert upload.map_index_template == "{{ batch_label }}"
    assert manifest.map_index_template == "{{ shard_label }}"
    assert manifest.op_kwargs_expand_input.value == {"shard": [{"index": 0, "count": 1}]}  # one unless configured
    mapped = {"upload_batch", "build_manifest"}
    assert all(not isinstance(t, MappedOperator) for t in dag.tasks if t.task_id not in mapped)


@pytest.mark.parametrize("value", ["0", "-1", "many", "257"])
def test_a_manifest_shard_count_out_of_range_is_refused_with_the_setting_named(value):
    with pytest.raises(PublisherError, match=rf"PUBLISHER_MANIFEST_SHARDS='{value}' is not a whole number from 1"):
        manifest_shards(value)


@pytest.mark.parametrize("value", ["-1", "a week", "32"])
def test_a_lookback_out_of_range_is_refused_with_the_setting_named(value):
    with pytest.raises(PublisherError, match=rf"PUBLISHER_LOOKBACK_DAYS='{value}' is not a whole number from 0 to 31"):
        lookback_days(value)


def test_the_lookback_comes_from_the_setting():
    assert (lookback_days(""), lookback_days("0"), lookback_days("7")) == (2, 0, 7)


def test_manifest_shards_come_from_the_setting():
    assert manifest_shards("3") == [{"index": i, "count": 3} for i in range(3)]
    assert manifest_shards("") == [{"index": 0, "count": 1}]


def serialized(dag):
    """The DAG as the api-server holds it: what validates a trigger's conf and feeds the form."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))


PUBLISHER_PARAMS, INDEXER_PARAMS = param_defaults(publisher_params()), param_defaults(indexer_params())
REBUILD_PARAMS = param_defaults(rebuild_params())
DAG_IDS = ["publish_product_images", "index_product_catalog", "rebuild_product_index"]


@pytest.mark.parametrize(
    ("dag_id", "expected"),
    [
        ("publish_product_images", PUBLISHER_PARAMS),
        ("index_product_catalog", INDEXER_PARAMS),
        ("rebuild_product_index", REBUILD_PARAMS),
    ],
)
def test_the_form_takes_the_params_module_whole_in_its_order(dagbag, dag_id, expected):
    params = dagbag.dags[dag_id].params
    assert list(params) == list(expected)  # the most used first: the form shows them in this order
    assert {name: params[name] for name in params} == expected


def test_the_forms_defaults_are_the_runbook_commands_defaults():
    """defaults.py holds each default once: the forms and the runbook commands' flags take it from there."""
    assert PUBLISHER_PARAMS["batch_size"] == defaults.DEFAULT_BATCH_IMAGES
    assert PUBLISHER_PARAMS["upload_concurrency"] == defaults.DEFAULT_UPLOAD_CONCURRENCY
    assert (INDEXER_PARAMS["group_id"], INDEXER_PARAMS["batch_size"]) == ("catalog-indexer", 500)
    assert (PUBLISHER_PARAMS["images_dir"], PUBLISHER_PARAMS["catalog_file"]) == ("data/images", "data/products.json")
    assert (PUBLISHER_PARAMS["prefix"], PUBLISHER_PARAMS["topic"], INDEXER_PARAMS["index"]) == ("products",) * 3
    assert {name: REBUILD_PARAMS[name] for name in INDEXER_PARAMS if name in REBUILD_PARAMS} == {
        name: INDEXER_PARAMS[name] for name in REBUILD_PARAMS if name in INDEXER_PARAMS
    }  # the rebuild reads the live indexer's index, topic, group and catalog
    assert REBUILD_PARAMS["action"] == "rebuild"


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_param_is_a_form_field_a_person_can_fill(dagbag, dag_id):
    """Airflow 3.3's form marks a typed param without "null" in its type as required, and disables Trigger while
    one is empty (None or ""); it shows description_md only when description is None. Every param has a title,
    a section and a description_md, and the untouched form is valid as the api-server checks it."""
    dag = dagbag.dags[dag_id]
    for name in dag.params:
        param = dag.params.get_param(name)
        types = param.schema["type"] if isinstance(param.schema["type"], list) else [param.schema["type"]]
        required = "null" not in types
        assert not (required and param.value in (None, "")), f"{name}: required by the form, and empty by default"
        assert param.schema["title"] and param.schema["section"] and param.schema["description_md"], name
        assert param.description is None, f"{name}: a description hides description_md in the form"
    assert serialized(dag).params.deep_merge({}).validate() == {name: dag.params[name] for name in dag.params}
    assert dag.dag_display_name != dag.dag_id
    assert all(task.task_display_name != task.task_id for task in dag.tasks)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"bucket": "ab"}, "Invalid input for param bucket: 'ab' is too short"),
        ({"bucket": "Bad_Bucket!"}, "'Bad_Bucket!' does not match '^[a-z0-9][a-z0-9.-]*[a-z0-9]$'"),
        ({"day": "2025-13-01"}, "Invalid input for param day: '2025-13-01' is not a 'date'"),
        ({"public_base_url": "cdn.example.com"}, "Invalid input for param public_base_url: 'cdn.example.com' does not"),
        ({"batch_size": 0}, "Invalid input for param batch_size: 0 is less than the minimum of 1"),
        ({"server_side_encryption": "kms"}, "'kms' is not one of ['bucket default', 'AES256', 'aws:kms']"),
    ],
    ids=["short-bucket", "bad-bucket", "bad-day", "url-without-scheme", "zero-batch", "unknown-encryption"],
)
def test_a_bad_value_is_refused_naming_the_param_the_rule_and_its_explanation(dagbag, conf, message):
    """What the REST API and the form answer (HTTP 400): the param, the rule broken, then its title and help."""
    from airflow.exceptions import ParamValidationError

    dag = dagbag.dags["publish_product_images"]
    with pytest.raises(ParamValidationError) as refused:
        serialized(dag).params.deep_merge(conf).validate()
    assert message in str(refused.value)
    (name,) = conf
    assert dag.params.get_param(name).schema["title"] in str(refused.value)  # the schema, with its help, follows


def test_optional_params_accept_empty_and_filled_values(dagbag):
    dag = serialized(dagbag.dags["publish_product_images"])
    optional = {"day": "2025-06-01", "prefix": "", "public_base_url": "https://cdn.example.com", "sse_kms_key_id": "k1"}
    assert {k: v for k, v in dag.params.deep_merge(optional).validate().items() if k in optional} == optional
    assert all(dag.params.deep_merge({name: None}).validate()[name] is None for name in optional)


def test_schedule_time_zone_and_shared_default_args(dagbag):
    """A data-interval timetable in the DAG's zone (so the 00:00 run takes the day that ended), an aware start date."""
    from airflow.sdk import CronDataIntervalTimetable

    publisher, indexer = dagbag.dags["publish_product_images"], dagbag.dags["index_product_catalog"]
    assert publisher.timetable == CronDataIntervalTimetable("0 0 * * *", timezone=TIMEZONE)
    assert type(dagbag.dags["rebuild_product_index"].timetable).__name__ == "NullTimetable"  # by hand only
    for dag in (publisher, indexer, dagbag.dags["rebuild_product_index"]):
        assert dag.start_date.tzinfo is not None and dag.start_date == START_DATE
        assert dag.default_args == DEFAULT_ARGS


@pytest.mark.parametrize(
    ("exception", "action"),
    [
        (ServiceUnavailableError("Kafka did not confirm"), "retry"),  # may pass on its own
        (PublisherError("images_dir does not exist"), "fail"),  # bad input: a retry cannot fix it
        (KeyError("a bug"), "default"),  # anything else: the task's retries as usual
    ],
)
def test_the_retry_policy_retries_service_errors_and_fails_user_errors_at_once(dagbag, exception, action):
    """One way to decide, Airflow's: every task of both DAGs carries the policy, also once serialized."""
    assert RETRY_POLICY.evaluate(exception, try_number=1, max_tries=3).action.value == action
    for dag_id in DAG_IDS:
        for task in serialized(dagbag.dags[dag_id]).tasks:
            assert task.has_retry_policy, (dag_id, task.task_id)
        for task in dagbag.dags[dag_id].tasks:
            assert task.retry_policy.evaluate(exception, try_number=1, max_tries=3).action.value == action


def test_dag_files_are_thin():
    for dag_file in DAGS.glob("*.py"):
        text = Path(dag_file).read_text()
        top_level_imports = [
            line for line in text.splitlines() if line.startswith(("import ", "from ")) and "__future__" not in line
        ]
        allowed = (
            "from datetime",
            "from airflow",
            "from include.catalog_publisher.assets",
            "from include.catalog_publisher.dag_defaults",
            "from include.catalog_publisher.params",
        )
        assert all(line.startswith(allowed) for line in top_level_imports), top_level_imports
