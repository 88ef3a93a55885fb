"""The publisher under CeleryExecutor for real, sharing nothing: PostgreSQL metadata database, Redis broker,
api-server, scheduler, dag-processor and two Celery workers, each with its own working folder and Airflow home.
No file is shared: the images are in a landing bucket (images_dir s3://landing/in, date prefixes), the catalog is in
a bucket, and every artifact (manifest, batches, results, mapping, catalog, state) goes to SeaweedFS
($PUBLISHER_ARTIFACTS_URL). The scheduler's own daily run, a manual run and a backfill run on both workers, and
the index ends up holding the catalog.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from devstack import system_services
from devstack.airflow_services import RUN_TIMEOUT_S, Airflow, migrate, service_env
from devstack.embedded_stack import free_port
from include.catalog_publisher import env_clients
from include.catalog_publisher.run_artifacts import run_folder
from tests.helpers import image_bytes, indexer_caught_up, s3_client

PRODUCTS = [f"PROD-C{i:03d}" for i in range(24)]
BATCH_SIZE = 3  # 8 mapped upload tasks for two single-slot workers
WORKERS = ("worker-a", "worker-b")
YESTERDAY = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()  # the scheduled run's day (UTC)
# Older days a backfill publishes: two products only they have, and an older image of PROD-C000 (Yesterday's stays).
HISTORY = {"2025-06-01": ["PROD-B1", "PROD-C000"], "2025-06-02": ["PROD-B2"]}


@pytest.fixture(scope="module")
def celery(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("celery")
    s3 = s3_client(stack)
    bucket, artifacts, landing = (f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("celery", "artifacts", "landing"))
    for name in (bucket, artifacts, landing):
        s3.create_bucket(Bucket=name)
    for i, pid in enumerate(PRODUCTS):
        s3.put_object(Bucket=landing, Key=f"in/{YESTERDAY}/{pid}.jpg", Body=image_bytes(seed=i))
    for day, ids in HISTORY.items():
        for pid in ids:
            s3.put_object(Bucket=landing, Key=f"in/{day}/{pid}.jpg", Body=image_bytes(seed=100 + len(pid)))
    catalog = [{"product_id": pid, "name": f"Product {pid}"} for pid in [*PRODUCTS, "PROD-B1", "PROD-B2"]]
    s3.put_object(Bucket=artifacts, Key="inputs/products.json", Body=json.dumps(catalog).encode())

    with system_services.postgres() as database, system_services.redis() as broker:
        port = free_port()
        env = service_env(
            root / "airflow",
            port,
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database,
            AIRFLOW__CELERY__BROKER_URL=broker,
            AIRFLOW__CELERY__RESULT_BACKEND="db+" + database.replace("+psycopg2", ""),
            # What scheduled runs and backfills read and write: buckets only.
            PUBLISHER_BUCKET=bucket,
            PUBLISHER_IMAGES_DIR=f"s3://{landing}/in",
            PUBLISHER_CATALOG_FILE=f"s3://{artifacts}/inputs/products.json",
            PUBLISHER_ALLOWED_INPUTS=f"s3://{landing}/in",
            PUBLISHER_ARTIFACTS_URL=f"s3://{artifacts}/runs",
            PUBLISHER_MANIFEST_SHARDS="2",  # the scan of the landing bucket in two tasks, on either worker
            CATALOG_PUBLISHER_HOME=str(root / "control-plane"),
        )
        migrate(env)
        airflow = Airflow(root / "airflow", env, port)
        try:
            airflow.start()
            for name in WORKERS:  # both on this one host, each reporting its own name as the task instances' hostname
                airflow.spawn_celery_worker(root / name, "--concurrency", "1")
            for dag_id in ("publish_product_images", "index_product_catalog"):  # the scheduler's run comes now
                status, body = airflow.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                assert status == 200, body
            yield {
                "airflow": airflow,
                "root": root,
                "bucket": bucket,
                "artifacts": artifacts,
                "landing": landing,
                "s3": s3,
                "stack": stack,
            }
        finally:
            airflow.stop()


def runs_of(airflow: Airflow, run_type: str) -> list[dict]:
    return airflow.get(f"/api/v2/dags/publish_product_images/dagRuns?run_type={run_type}")["dag_runs"]


def workers_of(airflow: Airflow, run_id: str) -> set[str]:
    return {t["hostname"] for t in airflow.task_instances("publish_product_images", run_id) if t["hostname"]}


def test_the_schedulers_own_run_publishes_yesterdays_prefix_on_both_workers(celery):
    airflow, s3 = celery["airflow"], celery["s3"]
    airflow.wait_for(lambda: runs_of(airflow, "scheduled"), "the first scheduled run")
    (run,) = runs_of(airflow, "scheduled")
    assert airflow.finished("publish_product_images", run["dag_run_id"])["state"] == "success"
    assert workers_of(airflow, run["dag_run_id"]) == set(WORKERS)
    shards = [airflow.xcom("publish_product_images", run["dag_run_id"], "build_manifest", i) for i in (0, 1)]
    assert sum(shard["images"] for shard in shards) == len(PRODUCTS)
    assert {shard["images_dir"] for shard in shards} == {f"s3://{celery['landing']}/in"}
    for i, pid in enumerate(PRODUCTS):
        body = s3.get_object(Bucket=celery["bucket"], Key=f"products/{YESTERDAY}/{pid}.jpg")["Body"].read()
        assert body == image_bytes(seed=i), pid


def test_mapped_batches_run_on_both_workers_and_the_mapping_and_catalog_are_exact(celery):
    airflow, s3 = celery["airflow"], celery["s3"]
    # Both workers free first: an indexer run the scheduled publish started may still hold one of the two slots.
    airflow.wait_for_no_run()
    conf = {"day": YESTERDAY, "bucket": celery["bucket"], "prefix": "celery", "batch_size": BATCH_SIZE}
    status, run = airflow.trigger("publish_product_images", conf)
    assert status == 200, run
    run_id = run["dag_run_id"]
    assert airflow.finished("publish_product_images", run_id)["state"] == "success"

    uploads = [t for t in airflow.task_instances("publish_product_images", run_id) if t["task_id"] == "upload_batch"]
    assert len(uploads) == len(PRODUCTS) // BATCH_SIZE
    assert {t["state"] for t in uploads} == {"success"}
    by_worker = {name: sorted(t["map_index"] for t in uploads if t["hostname"] == name) for name in WORKERS}
    assert all(by_worker.values()), f"every batch ran on one worker: {by_worker}"
    assert sorted(by_worker["worker-a"] + by_worker["worker-b"]) == list(range(len(uploads)))
    # Each worker uploaded in its own folder, and only its own batches (the upload journal is written
    # by the uploading task alone; results files are also downloaded by whichever worker merges them).
    folder = run_folder("publish_product_images", run_id)
    for name, batches in by_worker.items():
        results = celery["root"] / name / "data" / "work" / folder / "results"
        assert sorted(int(p.name.split(".")[0].split("-")[1]) for p in results.glob("batch-*.journal.jsonl")) == batches

    run_prefix = f"runs/{folder}"
    mapping = json.loads(
        s3.get_object(Bucket=celery["artifacts"], Key=f"{run_prefix}/s3_url_mapping.json")["Body"].read()
    )
    counts = (mapping["total_images"], mapping["uploaded_images"], mapping["failed_images"])
    assert counts == (len(PRODUCTS), len(PRODUCTS), 0)
    assert sorted(mapping["product_to_s3_url"]) == PRODUCTS
    for i, (pid, url) in enumerate(sorted(mapping["product_to_s3_url"].items())):
        key = f"celery/{YESTERDAY}/{pid}.jpg"
        assert url.endswith(f"/{celery['bucket']}/{key}")
        assert s3.get_object(Bucket=celery["bucket"], Key=key)["Body"].read() == image_bytes(seed=i)
    catalog = json.loads(
        s3.get_object(Bucket=celery["artifacts"], Key=f"{run_prefix}/products_with_s3_urls.json")["Body"].read()
    )
    assert {p["product_id"]: p["image_url"] for p in catalog if "image_url" in p} == mapping["product_to_s3_url"]
    latest = s3.get_object(Bucket=celery["artifacts"], Key="runs/publish_product_images/latest/s3_url_mapping.json")[
        "Body"
    ].read()
    assert json.loads(latest) == mapping
    # Nothing of the run was kept on a local disk as an artifact.
    assert not (celery["root"] / "control-plane" / "data" / "runs").exists()
    for name in WORKERS:
        assert not (celery["root"] / name / "data" / "runs").exists()


def test_a_backfill_publishes_its_days_from_the_bucket_and_the_index_holds_the_catalog(celery):
    airflow, s3 = celery["airflow"], celery["s3"]
    days = sorted(HISTORY)
    # Both days at once, their shards' scans side by side: more tasks in flight than one worker takes.
    done = airflow.cli(
        "backfill", "create", "--dag-id", "publish_product_images",
        "--from-date", days[0], "--to-date", days[-1], "--max-active-runs", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    airflow.wait_for(lambda: len(runs_of(airflow, "backfill")) == len(days), "the backfill's runs")
    ran_on: set[str] = set()
    for run in runs_of(airflow, "backfill"):
        assert airflow.finished("publish_product_images", run["dag_run_id"])["state"] == "success"
        ran_on |= workers_of(airflow, run["dag_run_id"])
    assert ran_on == set(WORKERS)
    for day, ids in HISTORY.items():
        for pid in ids:
            body = s3.get_object(Bucket=celery["bucket"], Key=f"products/{day}/{pid}.jpg")["Body"].read()
            assert body == image_bytes(seed=100 + len(pid))

    # The publishes' topic asset starts the indexer, on either worker; once it has read everything, the index
    # holds the latest catalog: each product with its newest image (PROD-C000's is yesterday's, not 06-01's).
    stack = celery["stack"]
    airflow.wait_for(lambda: indexer_caught_up(stack.kafka_bootstrap), "the indexer to catch up", RUN_TIMEOUT_S)
    latest = "runs/publish_product_images/latest/products_with_s3_urls.json"
    catalog = json.loads(s3.get_object(Bucket=celery["artifacts"], Key=latest)["Body"].read())
    assert {p["product_id"] for p in catalog} == {*PRODUCTS, "PROD-B1", "PROD-B2"}
    es = env_clients.elasticsearch(stack.elasticsearch_url)
    try:
        indexed = {p["product_id"]: es.get(index="products", id=p["product_id"])["_source"] for p in catalog}
    finally:
        es.close()
    assert {pid: doc.get("image_url") for pid, doc in indexed.items()} == {
        p["product_id"]: p.get("image_url") for p in catalog
    }
    assert indexed["PROD-C000"]["image_date"] == YESTERDAY and indexed["PROD-B1"]["image_date"] == "2025-06-01"
