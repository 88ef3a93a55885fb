"""Two publishes to two topics merged into one indexer run, under a real scheduler (LocalExecutor, PostgreSQL).

The publishes run first with `airflow dags test` against the deployment's database while no scheduler is
up, exactly as two publishes finishing while an indexer run is busy: their events wait in Airflow's
queue. The scheduler then starts and makes one asset-triggered run of them, which must index both topics
and verify both catalogs.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid

import pytest

from devstack import system_services
from devstack.airflow_services import AIRFLOW, RUN_TIMEOUT_S, Airflow, migrate, service_env
from devstack.embedded_stack import free_port
from include.catalog_publisher import env_clients
from tests.helpers import read_messages, s3_client, write_catalog, write_image

RUNS = "/api/v2/dags/index_product_catalog/dagRuns?run_type=asset_triggered"


def airflow_cli(env: dict, *args: str) -> None:
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])


@pytest.fixture
def database():
    with system_services.postgres() as url:
        yield url


def test_two_publishes_to_two_topics_are_indexed_and_verified_by_one_merged_run(stack, database, tmp_path):
    """Both topics indexed by their own consumers, both catalogs verified, each product with its own S3 URL."""
    home, project = tmp_path / "airflow", tmp_path / "project"
    home.mkdir()
    bucket = f"merge-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    port = free_port()
    env = service_env(
        home,
        port,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database,
        CATALOG_PUBLISHER_HOME=str(project),
        PUBLISHER_BUCKET=bucket,
        PUBLISHER_SCHEDULE="none",  # only the two publishes below
    )
    migrate(env)
    airflow_cli(env, "dags", "reserialize")
    airflow_cli(env, "dags", "unpause", "index_product_catalog")  # a paused DAG would not queue the events

    topics = [f"merge-a-{uuid.uuid4().hex[:6]}", f"merge-b-{uuid.uuid4().hex[:6]}"]
    products = {}
    for n, topic in enumerate(topics):
        folder = project / "data" / topic
        ids = [f"PROD-M{n}{i}" for i in range(4)]
        for i, pid in enumerate(ids):
            write_image(folder / "images" / f"{pid}.jpg", seed=10 * n + i)
        write_catalog(folder / "products.json", [{"product_id": pid, "name": pid} for pid in ids])
        products[topic] = ids
        conf = {"images_dir": str(folder / "images"), "catalog_file": str(folder / "products.json")}
        conf |= {"topic": topic, "prefix": topic}
        airflow_cli(env, "dags", "test", "publish_product_images", "-c", json.dumps(conf))

    server = Airflow(home, env, port)
    try:
        server.start()
        server.wait_for(lambda: server.get(RUNS)["total_entries"] >= 1, "an asset-triggered indexer run", RUN_TIMEOUT_S)
        (run,) = server.get(RUNS)["dag_runs"]  # one run for both publishes
        run_id = run["dag_run_id"]
        finished = server.finished("index_product_catalog", run_id)
        instances = server.task_instances("index_product_catalog", run_id)
        tasks = {(t["task_id"], t["map_index"]): t["state"] for t in instances}
        assert finished["state"] == "success", tasks

        quoted = urllib.request.quote(run_id, safe="")
        events = server.get(f"/api/v2/dags/index_product_catalog/dagRuns/{quoted}/upstreamAssetEvents")["asset_events"]
        assert sorted(e["extra"]["topic"] for e in events) == sorted(topics)
        # One asset per topic, and each topic's consumers in a group of their own.
        assert sorted(e["uri"] for e in events) == sorted(f"kafka://kafka_default/{t}" for t in topics)

        # One consumer per topic by default, each a mapped task; every partition holding products committed.
        assert sorted(k for k in tasks if k[0] == "index_partitions") == [("index_partitions", i) for i in range(2)]
        indexed = server.xcom("index_product_catalog", run_id, "indexing_totals")
        assert sorted(indexed["topics"]) == sorted(topics) and indexed["consumers"] == 2
        holding = {t: sorted({m.partition() for m in read_messages(stack.kafka_bootstrap, t)}) for t in topics}
        assert indexed["partitions"] == holding
        assert indexed["indexed"] >= 8

        verified = server.xcom("index_product_catalog", run_id, "verify_index")
        catalogs = [e["extra"]["catalog"] for e in sorted(events, key=lambda e: e["timestamp"])]
        assert [c["catalog"] for c in verified["catalogs"]] == catalogs
        assert [c["verified"] for c in verified["catalogs"]] == [4, 4]
        es = env_clients.elasticsearch(stack.elasticsearch_url)
        for topic, ids in products.items():
            for pid in ids:
                assert es.get(index="products", id=pid)["_source"]["image_url"].endswith(f"/{bucket}/{topic}/{pid}.jpg")
    finally:
        server.stop()
