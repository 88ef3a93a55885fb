"""Publish product images to S3, rewrite the catalog with their URLs, publish it to Kafka.

build_manifest (one mapped task per shard) -> plan_batches -> upload_batch (one mapped task per batch)
-> merge_url_mapping -> update_catalog -> publish_to_kafka -> delete_removed_images (opt-in)
                                                           -> (Kafka topic asset) -> index_product_catalog

Which images a run takes: a flat images folder is taken whole; a folder of YYYY-MM-DD
sub-folders is date-partitioned, and each run takes the days it covers, dated in
$PUBLISHER_TIMEZONE (UTC by default): the `day` param if set, else its data interval. The
schedule ($PUBLISHER_SCHEDULE, default @daily; "none" for manual runs only) is a data-interval
timetable, so the 00:00 run of D+1 publishes folder D, and
`airflow backfill create --dag-id publish_product_images --from-date A --to-date B` publishes
folders A..B, one run per day. A manual run takes the last complete day before its logical date.
Unchanged images are skipped unless force_reupload is set. No catch-up on first deploy.
$PUBLISHER_MANIFEST_SHARDS (default 1) build_manifest tasks share the images by product id, each on any
worker; plan_batches merges their manifests.

Only products whose message changed since the last publish to the topic are sent, plus a tombstone
for each published product gone from the catalog file (republish_all sends everything again); the
indexer follows. A dry run plans and reports, and changes nothing. A run with nothing to upload
writes the URL mapping and the catalog in plan_batches; when the topic already holds that catalog,
the indexer has it all and no deletion is due, the tasks after are skipped (a quiet day is two tasks).

Orchestration only: each task calls include.catalog_publisher.publisher_tasks. XCom carries paths and
counts; a run's files live in data/runs/publish_product_images/<run_id>/, and the latest copies
at the runbook's paths in data/. With $PUBLISHER_ARTIFACTS_URL=s3://bucket/prefix (for workers
that share no disk) they live under that prefix instead, the latest in .../publish_product_images/latest/.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, get_current_context, task

from include.catalog_publisher.assets import PUBLISHED_TOPICS, topic_asset
from include.catalog_publisher.dag_defaults import (
    DEFAULT_ARGS,
    START_DATE,
    TIMEZONE,
    lookback_days,
    manifest_shards,
    mapped_values,
    publisher_schedule,
)
from include.catalog_publisher.params import publisher_params


def _run(dag_run, params):
    from include.catalog_publisher.run_artifacts import RunArtifacts

    return RunArtifacts(dag_run.dag_id, dag_run.run_id, dry_run=params["dry_run"])


@dag(
    dag_id="publish_product_images",
    dag_display_name="Publish product images",
    description="Upload product images to S3, rewrite the catalog with their URLs, publish it to Kafka",
    schedule=publisher_schedule(),
    start_date=START_DATE,
    catchup=False,  # a first deploy runs the latest complete day only; backfills are explicit
    max_active_runs=4,
    tags=["catalog", "s3", "kafka"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params=publisher_params(),
)
def publish_product_images():
    # multiple_outputs=False: a task annotated `-> dict` would also push each key of its result as an XCom of its
    # own, one API call each; the tasks read the whole result.
    @task(multiple_outputs=False, task_display_name="Find the run's images", map_index_template="{{ shard_label }}")
    def build_manifest(
        shard: dict, params=None, dag_run=None, data_interval_start=None, data_interval_end=None
    ) -> dict:
        from include.catalog_publisher import allowed_outputs, publisher_tasks
        from include.catalog_publisher.date_folders import covered_days
        from include.catalog_publisher.manifest import Shard

        allowed_outputs.check_publisher(params)  # the first task: before anything is written
        part = Shard(**shard)
        get_current_context()["shard_label"] = part.label
        # A run without a logical date has no data interval (and no such context keys): run_after decides.
        start, end = data_interval_start, data_interval_end
        # A scheduled run also takes the days before its own ($PUBLISHER_LOOKBACK_DAYS): files that landed late.
        lookback = lookback_days() if dag_run.run_type == "scheduled" and not params.get("day") else 0
        first, end = covered_days(params.get("day"), start, end, dag_run.run_after, TIMEZONE, lookback)
        run = _run(dag_run, params)
        images, layout, force = params["images_dir"], params["images_layout"], params["force_reupload"]
        return publisher_tasks.build_manifest(run, images, layout, first, end, part, force)

    @task(task_display_name="Plan upload batches")
    def plan_batches(parts: list[dict], params=None, dag_run=None, ti=None) -> list[dict]:
        from airflow.configuration import conf

        from include.catalog_publisher import publisher_tasks

        max_batches = conf.getint("core", "max_map_length")
        run = _run(dag_run, params)
        batches, manifest = publisher_tasks.plan_batches(
            run,
            mapped_values(parts),
            params["batch_size"],
            max_batches,
            params["bucket"],
            params["prefix"] or "",
            params["force_reupload"],
        )
        # The merged manifest, for the tasks after (mapped over the batches, the return value must be their list).
        ti.xcom_push(key="manifest", value=manifest)
        if not batches:  # skips the uploads, and the tasks after when nothing is left for them either
            publisher_tasks.skip_after_planning(run, manifest, params, ti)
        return batches

    @task(
        multiple_outputs=False,
        task_display_name="Upload batch",
        map_index_template="{{ batch_label }}",
        retry_delay=timedelta(seconds=10),
    )
    def upload_batch(batch: dict, manifest: dict, params=None, dag_run=None) -> dict:
        from include.catalog_publisher import publisher_tasks
        from include.catalog_publisher.batching import Batch
        from include.catalog_publisher.s3_store import Encryption

        get_current_context()["batch_label"] = Batch(**batch).label
        sse = None if params["server_side_encryption"] == "bucket default" else params["server_side_encryption"]
        encryption = Encryption(sse, params["sse_kms_key_id"] or None)
        return publisher_tasks.upload_batch(
            _run(dag_run, params),
            manifest,
            batch,
            params["bucket"],
            params["prefix"] or "",
            params["upload_concurrency"],
            encryption,
        )

    # Also runs when no batch was planned: every image unchanged in the bucket.
    @task(multiple_outputs=False, task_display_name="Write the URL mapping", trigger_rule="none_failed")
    def merge_url_mapping(batch_results: list[dict], params=None, dag_run=None) -> dict:
        from include.catalog_publisher import publisher_tasks

        return publisher_tasks.merge_url_mapping(
            _run(dag_run, params),
            mapped_values(batch_results),
            params["bucket"],
            params["prefix"] or "",
            params["public_base_url"] or None,
            params["max_failed_percent"],
        )

    @task(multiple_outputs=False, task_display_name="Rewrite the catalog")
    def update_catalog(mapping: dict, manifest: dict, params=None, dag_run=None) -> dict:
        from include.catalog_publisher import publisher_tasks

        return publisher_tasks.update_catalog(_run(dag_run, params), params["catalog_file"], mapping, manifest, params)

    # One publish at a time across runs: each reads the topic's published state and leaves the next one's.
    @task(
        multiple_outputs=False,
        task_display_name="Publish to Kafka",
        outlets=[PUBLISHED_TOPICS],
        max_active_tis_per_dag=1,
    )
    def publish_to_kafka(catalog: dict, manifest: dict, params=None, dag_run=None, outlet_events=None, ti=None):
        from include.catalog_publisher import publisher_tasks

        result = publisher_tasks.publish_to_kafka(
            _run(dag_run, params),
            catalog,
            params["topic"],
            manifest=manifest,
            republish_all=params["republish_all"],
            max_deletions=params["max_deletions"],
            accept_partition_change=params["accept_partition_change"],
        )
        # Announce what was sent, and while the indexer's group is behind the topic (None: it could not be told).
        behind = result.get("indexer_behind")
        # Nothing sent and the indexer has it all: no indexer run for nothing.
        if not params["dry_run"] and (result["published"] or result["removed"] or behind != 0):
            event = {
                "topic": result["topic"],
                "products": result["published"],
                "removed": result["removed"],
                "indexer_behind": behind,
                "catalog": catalog["catalog"],
            }
            outlet_events[PUBLISHED_TOPICS].add(topic_asset(result["topic"]), extra=event)  # the asset of this topic
        return publisher_tasks.returning_before_deletion(result, params, ti)

    # After the publish (the catalog without those images is out); one at a time across runs (pending deletions).
    @task(multiple_outputs=False, task_display_name="Delete objects of removed images", max_active_tis_per_dag=1)
    def delete_removed_images(published: dict, manifest: dict, catalog: dict, params=None, dag_run=None) -> dict:
        from include.catalog_publisher import publisher_tasks

        return publisher_tasks.delete_removed_images(_run(dag_run, params), manifest, catalog, params)

    batches = plan_batches(build_manifest.expand(shard=manifest_shards()))
    manifest = batches["manifest"]  # plan_batches' XCom of that key
    uploads = upload_batch.partial(manifest=manifest).expand(batch=batches)
    catalog = update_catalog(merge_url_mapping(uploads), manifest)
    delete_removed_images(publish_to_kafka(catalog, manifest), manifest, catalog)


publish_product_images()
