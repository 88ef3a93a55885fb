"""Every output param of both DAGs is confined to the deployment's PUBLISHER_ALLOWED_OUTPUTS (and max_deletions to
PUBLISHER_MAX_DELETIONS), checked by each DAG's first task: a run that names another bucket, prefix, topic or index
fails there, under dag.test, before anything is written."""

from __future__ import annotations

import contextlib
import uuid

import pytest

from devstack import local_airflow
from include.catalog_publisher import env_clients
from tests.helpers import make_kafka_topic, s3_client, write_catalog, write_image


@pytest.fixture
def deployment(stack, tmp_path, monkeypatch):
    """A deployment allowed to write one bucket's products/ prefix, one topic and one index; a second bucket and
    names it is not allowed to write."""
    name = uuid.uuid4().hex[:8]
    bucket, other = f"allowed-{name}", f"other-{name}"
    s3 = s3_client(stack)
    for each in (bucket, other):
        s3.create_bucket(Bucket=each)
    topic = make_kafka_topic(stack.kafka_bootstrap, f"allowed-{name}")
    index = f"allowed-{name}"
    monkeypatch.setenv("PUBLISHER_ALLOWED_OUTPUTS", f"s3://{bucket}/products,kafka://{topic},elasticsearch://{index}")
    monkeypatch.setenv("PUBLISHER_MAX_DELETIONS", "50")
    write_image(tmp_path / "images" / "PROD-1.jpg")
    write_catalog(tmp_path / "products.json", [{"product_id": "PROD-1"}])
    conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(tmp_path / "products.json")}
    conf |= {"bucket": bucket, "topic": topic, "max_deletions": 50}  # the form's default, were the DAG parsed here
    return {"conf": conf, "other": other, "index": index, "s3": s3, "name": name}


def objects(s3, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.mark.fault(
    "a publisher run naming a bucket, prefix or topic outside PUBLISHER_ALLOWED_OUTPUTS, or max_deletions above "
    "PUBLISHER_MAX_DELETIONS",
    "build_manifest fails at once naming the output and the setting; no object is written, no topic created",
)
@pytest.mark.parametrize("param", ["bucket", "prefix", "topic", "max_deletions"])
def test_a_publisher_output_outside_the_deployments_limit_fails_before_anything_is_written(
    stack, airflow_db, deployment, param
):
    from confluent_kafka.admin import AdminClient

    changed = {
        "bucket": deployment["other"],
        "prefix": "elsewhere",
        "topic": f"other-{deployment['name']}",
        "max_deletions": 51,
    }[param]
    run = local_airflow.run_dag("publish_product_images", {**deployment["conf"], param: changed})

    assert run.task_states["build_manifest"] == ["failed"] and "upload_batch" not in run.xcoms
    assert run.task_states["publish_to_kafka"] == ["upstream_failed"]
    for bucket in (deployment["conf"]["bucket"], deployment["other"]):
        assert objects(deployment["s3"], bucket) == []
    topics = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10).topics
    assert f"other-{deployment['name']}" not in topics


def test_the_same_run_inside_the_limit_publishes(stack, airflow_db, deployment):
    run = local_airflow.run_dag("publish_product_images", deployment["conf"])
    assert run.succeeded, run.task_states
    assert objects(deployment["s3"], deployment["conf"]["bucket"]) == ["products/PROD-1.jpg"]


@pytest.mark.fault(
    "an indexer run naming an index or topic outside PUBLISHER_ALLOWED_OUTPUTS",
    "plan_consumers fails at once naming the output and the setting; no document and no index written",
)
@pytest.mark.parametrize("param", ["index", "topic"])
def test_an_indexer_output_outside_the_deployments_limit_fails_before_anything_is_written(
    stack, airflow_db, deployment, param
):
    conf = {
        "topic": deployment["conf"]["topic"],
        "index": deployment["index"],
        "catalog_file": deployment["conf"]["catalog_file"],
    }
    conf[param] = f"other-{deployment['name']}"
    if param == "topic":
        make_kafka_topic(stack.kafka_bootstrap, conf["topic"])  # it exists: only the limit stops the run
    run = local_airflow.run_dag("index_product_catalog", conf)

    assert run.task_states["plan_consumers"] == ["failed"]
    assert run.task_states["index_partitions"] == ["upstream_failed"]
    with contextlib.closing(env_clients.elasticsearch(stack.elasticsearch_url)) as es:  # no socket left behind
        for index in (deployment["index"], f"other-{deployment['name']}"):
            assert not es.indices.exists(index=index)
