"""Publish product images to S3, rewrite the catalog with their URLs, publish it to Kafka.

build_manifest -> plan_batches -> upload_batch (one mapped task per batch) -> merge_url_mapping
-> update_catalog -> publish_to_kafka -> (Kafka topic asset) -> index_product_catalog

Orchestration only: each task calls catalog_publisher.publisher_tasks. XCom carries paths and
counts; a run's files live in data/runs/publish_product_images/<run_id>/, and the latest copies
at the runbook's paths in data/.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from catalog_publisher.assets import PRODUCTS_TOPIC


def _run(dag_run):
    from catalog_publisher.run_artifacts import RunArtifacts

    return RunArtifacts(dag_run.dag_id, dag_run.run_id)


@dag(
    dag_id="publish_product_images",
    description="Upload product images to S3, rewrite the catalog with their URLs, publish it to Kafka",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["catalog", "s3", "kafka"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "images_dir": Param(
            "data/images",
            type="string",
            minLength=1,
            title="Images directory",
            description="Folder of product images (searched recursively); relative paths start at the project home.",
        ),
        "catalog_file": Param(
            "data/products.json",
            type="string",
            minLength=1,
            title="Catalog file",
            description="Product catalog: a JSON array, an object with a 'products' array, or JSON Lines.",
        ),
        "bucket": Param(
            os.environ.get("PUBLISHER_BUCKET", "product-images"),
            type="string",
            pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
            title="S3 bucket",
            description="Bucket the images go to (3-63 lowercase letters, digits, dots, hyphens).",
        ),
        "prefix": Param("products", type="string", title="Key prefix", description="Object keys are {prefix}/{file name}."),
        "batch_size": Param(
            500,
            type="integer",
            minimum=1,
            title="Images per batch",
            description="Images per mapped upload task; raised automatically to stay within [core] max_map_length.",
        ),
        "upload_concurrency": Param(32, type="integer", minimum=1, maximum=256, title="Uploads in flight per batch"),
        "public_base_url": Param(
            "", type="string", title="Public base URL (CDN)", description="If set, image URLs are {public_base_url}/{key} instead of S3 addresses."
        ),
        "max_failed_percent": Param(
            0,
            type="number",
            minimum=0,
            maximum=100,
            title="Tolerated failed images (%)",
            description="The run fails when more images than this failed to upload.",
        ),
        "topic": Param("products", type="string", minLength=1, title="Kafka topic"),
        "force_reupload": Param(
            False,
            type="boolean",
            title="Re-upload unchanged images",
            description="By default images already in the bucket with the same size and MD5 are skipped (and keep their URL).",
        ),
    },
)
def publish_product_images():
    @task
    def build_manifest(params=None, dag_run=None) -> dict:
        from catalog_publisher import publisher_tasks

        return publisher_tasks.build_manifest(_run(dag_run), params["images_dir"])

    @task
    def plan_batches(manifest: dict, params=None, dag_run=None) -> list[dict]:
        from airflow.configuration import conf

        from catalog_publisher import publisher_tasks

        return publisher_tasks.plan_batches(
            _run(dag_run), manifest, params["batch_size"], conf.getint("core", "max_map_length"), params["bucket"], params["prefix"], params["force_reupload"]
        )

    @task(map_index_template="{{ batch_label }}", retry_delay=timedelta(seconds=10))
    def upload_batch(batch: dict, manifest: dict, params=None, dag_run=None) -> dict:
        from catalog_publisher import publisher_tasks
        from catalog_publisher.batching import Batch

        get_current_context()["batch_label"] = Batch(**batch).label
        return publisher_tasks.upload_batch(_run(dag_run), manifest, batch, params["bucket"], params["prefix"], params["upload_concurrency"])

    @task
    def merge_url_mapping(batch_results: list[dict], params=None, dag_run=None) -> dict:
        from catalog_publisher import publisher_tasks

        # Indexing by position reads exactly len() values; iterating probes one past the end (a logged 404).
        results = [batch_results[i] for i in range(len(batch_results))]
        return publisher_tasks.merge_url_mapping(
            _run(dag_run), results, params["bucket"], params["prefix"], params["public_base_url"], params["max_failed_percent"]
        )

    @task
    def update_catalog(mapping: dict, params=None, dag_run=None) -> dict:
        from catalog_publisher import publisher_tasks

        return publisher_tasks.update_catalog(_run(dag_run), params["catalog_file"], mapping)

    @task(outlets=[PRODUCTS_TOPIC])
    def publish_to_kafka(catalog: dict, params=None, outlet_events=None) -> dict:
        from catalog_publisher import publisher_tasks

        result = publisher_tasks.publish_to_kafka(catalog, params["topic"])
        outlet_events[PRODUCTS_TOPIC].extra = {"topic": result["topic"], "products": result["published"], "catalog": catalog["catalog"]}
        return result

    manifest = build_manifest()
    uploads = upload_batch.partial(manifest=manifest).expand(batch=plan_batches(manifest))
    publish_to_kafka(update_catalog(merge_url_mapping(uploads)))


publish_product_images()
