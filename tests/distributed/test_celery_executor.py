"""The publisher under CeleryExecutor for real: PostgreSQL metadata database, Redis broker, api-server,
scheduler, dag-processor and two Celery workers, each worker with its own working folder and Airflow
home. The workers share nothing but the images folder: the catalog comes from S3 and every artifact
(manifest, batches, results, mapping, catalog) goes to SeaweedFS ($PUBLISHER_ARTIFACTS_URL).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from devstack.airflow_services import Airflow, migrate, service_env
from devstack.embedded_stack import free_port
from include.catalog_publisher.run_artifacts import run_folder
from tests import system_services
from tests.helpers import s3_client, write_image

PRODUCTS = [f"PROD-C{i:03d}" for i in range(24)]
BATCH_SIZE = 3  # 8 mapped upload tasks for two single-slot workers
WORKERS = ("worker-a", "worker-b")


@pytest.fixture(scope="module")
def celery(stack, tmp_path_factory):
    root = tmp_path_factory.mktemp("celery")
    images = root / "shared-images"
    for i, pid in enumerate(PRODUCTS):
        write_image(images / f"{pid}.jpg", seed=i)
    s3 = s3_client(stack)
    bucket, artifacts = f"celery-{uuid.uuid4().hex[:8]}", f"artifacts-{uuid.uuid4().hex[:8]}"
    for name in (bucket, artifacts):
        s3.create_bucket(Bucket=name)
    catalog = [{"product_id": pid, "name": f"Product {pid}"} for pid in PRODUCTS]
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
            PUBLISHER_SCHEDULE="none",
            PUBLISHER_ARTIFACTS_URL=f"s3://{artifacts}/runs",
            CATALOG_PUBLISHER_HOME=str(root / "control-plane"),
        )
        migrate(env)
        airflow = Airflow(root / "airflow", env, port)
        try:
            airflow.start()
            for name in WORKERS:
                home = root / name
                home.mkdir()
                # Both workers run on this one host: each reports its own name as the task instances' hostname.
                (home / "worker_identity.py").write_text(f"def hostname():\n    return {name!r}\n")
                worker_env = {
                    **env,
                    "AIRFLOW_HOME": str(home / "airflow"),
                    "CATALOG_PUBLISHER_HOME": str(home),
                    "PYTHONPATH": os.pathsep.join([str(home), env["PYTHONPATH"]]),  # its identity, and the project root
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_identity.hostname",
                }
                airflow.spawn(
                    name,
                    ["celery", "worker", "--concurrency", "1", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"],
                    worker_env,
                    home,
                )
            for dag_id in ("publish_product_images", "index_product_catalog"):
                status, body = airflow.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                assert status == 200, body
            yield {
                "airflow": airflow,
                "root": root,
                "images": images,
                "bucket": bucket,
                "artifacts": artifacts,
                "s3": s3,
            }
        finally:
            airflow.stop()


def test_mapped_batches_run_on_both_workers_and_the_mapping_and_catalog_are_exact(celery):
    airflow, s3 = celery["airflow"], celery["s3"]
    conf = {
        "images_dir": str(celery["images"]),
        "catalog_file": f"s3://{celery['artifacts']}/inputs/products.json",
        "bucket": celery["bucket"],
        "prefix": "celery",
        "batch_size": BATCH_SIZE,
    }
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
    assert (mapping["total_images"], mapping["uploaded_images"], mapping["failed_images"]) == (
        len(PRODUCTS),
        len(PRODUCTS),
        0,
    )
    assert sorted(mapping["product_to_s3_url"]) == PRODUCTS
    for pid, url in mapping["product_to_s3_url"].items():
        assert url.endswith(f"/{celery['bucket']}/celery/{pid}.jpg")
        body = s3.get_object(Bucket=celery["bucket"], Key=f"celery/{pid}.jpg")["Body"].read()
        assert body == (celery["images"] / f"{pid}.jpg").read_bytes()
    catalog = json.loads(
        s3.get_object(Bucket=celery["artifacts"], Key=f"{run_prefix}/products_with_s3_urls.json")["Body"].read()
    )
    assert {p["product_id"]: p["image_url"] for p in catalog} == mapping["product_to_s3_url"]
    latest = s3.get_object(Bucket=celery["artifacts"], Key="runs/publish_product_images/latest/s3_url_mapping.json")[
        "Body"
    ].read()
    assert json.loads(latest) == mapping
    # Nothing of the run was kept on a local disk as an artifact.
    assert not (celery["root"] / "control-plane" / "data" / "runs").exists()
    for name in WORKERS:
        assert not (celery["root"] / name / "data" / "runs").exists()

    # The publish's topic asset starts the indexer, on whichever worker, verifying the catalog from S3.
    indexer_runs = "/api/v2/dags/index_product_catalog/dagRuns?run_type=asset_triggered"
    airflow.wait_for(lambda: airflow.get(indexer_runs)["total_entries"] >= 1, "an asset-triggered indexer run")
    indexer_run = airflow.get(indexer_runs)["dag_runs"][0]
    assert airflow.finished("index_product_catalog", indexer_run["dag_run_id"])["state"] == "success"
    verified = airflow.xcom("index_product_catalog", indexer_run["dag_run_id"], "verify_index")
    assert (
        verified["verified"] == len(PRODUCTS)
        and verified["catalog"] == f"s3://{celery['artifacts']}/{run_prefix}/products_with_s3_urls.json"
    )
