"""Publish product images to S3, rewrite the catalog with their URLs, publish it to Kafka.

build_manifest -> plan_batches -> upload_batch (one mapped task per batch) -> merge_url_mapping
-> update_catalog -> publish_to_kafka -> (Kafka topic asset) -> index_product_catalog

Which images a run takes: a flat images folder is taken whole; a folder of YYYY-MM-DD
sub-folders is date-partitioned, and each run takes the folders of its data interval, so
`airflow backfill create --dag-id publish_product_images --from-date ... --to-date ...` re-uploads
exactly those days' images and republishes their products. Unchanged images are skipped unless
force_reupload is set. The schedule comes from $PUBLISHER_SCHEDULE (default @daily; "none" for
manual runs only), without catch-up on first deploy.

Orchestration only: each task calls include.catalog_publisher.publisher_tasks. XCom carries paths and
counts; a run's files live in data/runs/publish_product_images/<run_id>/, and the latest copies
at the runbook's paths in data/. With $PUBLISHER_ARTIFACTS_URL=s3://bucket/prefix (for workers
that share no disk) they live under that prefix instead, the latest in .../publish_product_images/latest/.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from include.catalog_publisher.assets import PRODUCTS_TOPIC

SCHEDULE = os.environ.get("PUBLISHER_SCHEDULE", "@daily")
# S3 bucket naming rules: 3-63 characters; lowercase letters, digits, dots and hyphens; starting and
# ending with a letter or digit; no two adjacent dots; not shaped like an IP address.
BUCKET_PATTERN = r"^(?!\d{1,3}(\.\d{1,3}){3}$)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# A path as typed in a form: not empty, no control characters (a pasted newline, say).
PATH_PATTERN = r"^[^\x00-\x1f]+$"


def _run(dag_run):
    from include.catalog_publisher.run_artifacts import RunArtifacts

    return RunArtifacts(dag_run.dag_id, dag_run.run_id)


@dag(
    dag_id="publish_product_images",
    description="Upload product images to S3, rewrite the catalog with their URLs, publish it to Kafka",
    schedule=None if SCHEDULE.lower() == "none" else SCHEDULE,
    start_date=datetime(2025, 1, 1),
    catchup=False,  # a first deploy runs the latest interval only; backfills are explicit
    max_active_runs=4,
    tags=["catalog", "s3", "kafka"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "images_dir": Param(
            "data/images",
            type="string",
            minLength=1,
            pattern=PATH_PATTERN,
            title="Images directory",
            description="Folder of product images, searched recursively; relative paths start at the project home. "
            "With YYYY-MM-DD sub-folders, a run takes the folders of its data interval.",
        ),
        "images_layout": Param(
            "auto",
            type="string",
            enum=["auto", "flat", "daily"],
            title="Images layout",
            description="flat: the whole folder every run; daily: the run's YYYY-MM-DD folders; auto: daily when such folders exist.",
        ),
        "catalog_file": Param(
            "data/products.json",
            type="string",
            minLength=1,
            pattern=PATH_PATTERN,
            title="Catalog file",
            description="Product catalog: a JSON array, an object with a 'products' array, or JSON Lines.",
        ),
        "bucket": Param(
            os.environ.get("PUBLISHER_BUCKET", "product-images"),
            type="string",
            pattern=BUCKET_PATTERN,
            title="S3 bucket",
            description="Bucket the images go to: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit.",
        ),
        "prefix": Param(
            "products",
            type="string",
            pattern=r"^[^\x00-\x1f]{0,512}$",
            title="Key prefix",
            description="Object keys are {prefix}/{file name}; empty for no prefix.",
        ),
        "batch_size": Param(
            2000,
            type="integer",
            minimum=1,
            maximum=100000,
            title="Images per batch",
            description="Images per mapped upload task; raised automatically to stay within [core] max_map_length.",
        ),
        "upload_concurrency": Param(
            32, type="integer", minimum=1, maximum=256, title="Uploads in flight per batch", description="Concurrent PUT requests inside one upload task."
        ),
        "force_reupload": Param(
            False,
            type="boolean",
            title="Re-upload unchanged images",
            description="By default images already in the bucket with the same size and MD5 are skipped (and keep their URL).",
        ),
        "server_side_encryption": Param(
            "bucket default",
            type="string",
            enum=["bucket default", "AES256", "aws:kms"],
            title="Server-side encryption",
            description="AES256 (SSE-S3) or aws:kms (SSE-KMS) on every uploaded image; by default the bucket's own encryption applies.",
        ),
        "sse_kms_key_id": Param(
            "",
            type="string",
            pattern=r"^[^\x00-\x1f\s]{0,2048}$",
            title="KMS key (SSE-KMS)",
            description="KMS key id or ARN for aws:kms; empty for the account's aws/s3 key.",
        ),
        "public_base_url": Param(
            "",
            type="string",
            pattern=r"^(https?://\S+)?$",
            title="Public base URL (CDN)",
            description="If set, image URLs are {public_base_url}/{key} instead of S3 addresses.",
        ),
        "max_failed_percent": Param(
            0,
            type="number",
            minimum=0,
            maximum=100,
            title="Tolerated failed images (%)",
            description="The run fails when more images than this failed to upload (after retries).",
        ),
        "topic": Param(
            "products",
            type="string",
            pattern=r"^[a-zA-Z0-9._-]{1,249}$",
            title="Kafka topic",
            description="Topic the catalog is published to, one message per product.",
        ),
    },
)
def publish_product_images():
    @task
    def build_manifest(params=None, dag_run=None, data_interval_start=None, data_interval_end=None) -> dict:
        from include.catalog_publisher import publisher_tasks

        start = data_interval_start or dag_run.logical_date or dag_run.run_after
        return publisher_tasks.build_manifest(_run(dag_run), params["images_dir"], params["images_layout"], start, data_interval_end)

    @task
    def plan_batches(manifest: dict, params=None, dag_run=None) -> list[dict]:
        from airflow.configuration import conf

        from include.catalog_publisher import publisher_tasks

        return publisher_tasks.plan_batches(
            _run(dag_run), manifest, params["batch_size"], conf.getint("core", "max_map_length"), params["bucket"], params["prefix"], params["force_reupload"]
        )

    @task(map_index_template="{{ batch_label }}", retry_delay=timedelta(seconds=10))
    def upload_batch(batch: dict, manifest: dict, params=None, dag_run=None) -> dict:
        from include.catalog_publisher import publisher_tasks
        from include.catalog_publisher.batching import Batch
        from include.catalog_publisher.s3_store import Encryption

        get_current_context()["batch_label"] = Batch(**batch).label
        sse = None if params["server_side_encryption"] == "bucket default" else params["server_side_encryption"]
        encryption = Encryption(sse, params["sse_kms_key_id"] or None)
        return publisher_tasks.upload_batch(_run(dag_run), manifest, batch, params["bucket"], params["prefix"], params["upload_concurrency"], encryption)

    @task(trigger_rule="none_failed")  # also when no batch was planned: every image unchanged in the bucket
    def merge_url_mapping(batch_results: list[dict], params=None, dag_run=None) -> dict:
        from include.catalog_publisher import publisher_tasks

        # Indexing by position reads exactly len() values; iterating probes one past the end (a logged 404).
        results = [batch_results[i] for i in range(len(batch_results))]
        return publisher_tasks.merge_url_mapping(
            _run(dag_run), results, params["bucket"], params["prefix"], params["public_base_url"], params["max_failed_percent"]
        )

    @task
    def update_catalog(mapping: dict, manifest: dict, params=None, dag_run=None) -> dict:
        from include.catalog_publisher import publisher_tasks

        return publisher_tasks.update_catalog(_run(dag_run), params["catalog_file"], mapping, manifest)

    @task(outlets=[PRODUCTS_TOPIC])
    def publish_to_kafka(catalog: dict, params=None, dag_run=None, outlet_events=None) -> dict:
        from include.catalog_publisher import publisher_tasks

        result = publisher_tasks.publish_to_kafka(_run(dag_run), catalog, params["topic"])
        outlet_events[PRODUCTS_TOPIC].extra = {"topic": result["topic"], "products": result["published"], "catalog": catalog["catalog"]}
        return result

    manifest = build_manifest()
    uploads = upload_batch.partial(manifest=manifest).expand(batch=plan_batches(manifest))
    publish_to_kafka(update_catalog(merge_url_mapping(uploads), manifest))


publish_product_images()
