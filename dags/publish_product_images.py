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
indexer follows. A dry run plans and reports, and changes nothing.

Orchestration only: each task calls include.catalog_publisher.publisher_tasks. XCom carries paths and
counts; a run's files live in data/runs/publish_product_images/<run_id>/, and the latest copies
at the runbook's paths in data/. With $PUBLISHER_ARTIFACTS_URL=s3://bucket/prefix (for workers
that share no disk) they live under that prefix instead, the latest in .../publish_product_images/latest/.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, get_current_context, task

from include.catalog_publisher.assets import PUBLISHED_TOPICS, topic_asset
from include.catalog_publisher.dag_defaults import (
    BUCKET_RULES,
    DEFAULT_ARGS,
    ENCRYPTIONS,
    IMAGE_LAYOUTS,
    PATH_PATTERN,
    START_DATE,
    TIMEZONE,
    TOPIC_PATTERN,
    lookback_days,
    manifest_shards,
    mapped_values,
    publisher_schedule,
)
from include.catalog_publisher.dag_defaults import PUBLISHER_PARAMS as DEFAULTS

# The form's sections, in this order.
WHAT = "What to publish"
WHERE = "Where it goes"
HOW = "How: batching and concurrency"
SAFETY = "Safety: encryption and failures"


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
    params={
        "images_dir": Param(
            DEFAULTS["images_dir"],
            type="string",
            minLength=1,
            pattern=PATH_PATTERN,
            title="Images folder",
            section=WHAT,
            description_md="Folder of product images (JPEG, PNG, WebP, GIF, AVIF), searched recursively; the file "
            "name without extension is the product id. A relative path starts at the project home, e.g. "
            "`data/images` (other folders: list them in `PUBLISHER_ALLOWED_INPUTS`). If it holds `YYYY-MM-DD` folders, "
            "a run takes its day's.",
        ),
        "day": Param(
            DEFAULTS["day"],
            type=["null", "string"],
            format="date",
            title="Day (date folders only)",
            section=WHAT,
            description_md="The `YYYY-MM-DD` folder to publish, e.g. `2025-06-01`. **Empty**: the run's data "
            "interval: a scheduled run takes the day that just ended, a manual run the last complete day "
            f"before its logical date (yesterday, for a run triggered now). Days are dated in {TIMEZONE.name}. "
            "Ignored for a folder without date folders.",
        ),
        "catalog_file": Param(
            DEFAULTS["catalog_file"],
            type="string",
            minLength=1,
            pattern=PATH_PATTERN,
            title="Catalog file",
            section=WHAT,
            description_md="The product catalog to rewrite with the image URLs: a JSON array, an object with a "
            "`products` array, or JSON Lines. A path (relative to the project home) or `s3://bucket/key`, "
            "e.g. `data/products.json`.",
        ),
        "images_layout": Param(
            DEFAULTS["images_layout"],
            type="string",
            enum=IMAGE_LAYOUTS,
            values_display={
                "auto": "Auto: date folders if there are any",
                "flat": "Flat: the whole folder every run",
                "daily": "Daily: the run's YYYY-MM-DD folders",
            },
            title="Folder layout",
            section=WHAT,
            description_md="How to read the images folder. *Auto* looks for `YYYY-MM-DD` folders.",
        ),
        "force_reupload": Param(
            DEFAULTS["force_reupload"],
            type="boolean",
            title="Re-upload unchanged images",
            section=WHAT,
            description_md="Off: images the bucket already holds with the same size and MD5 are skipped and keep "
            "their URL. On: upload every image again, e.g. after objects were changed outside this pipeline.",
        ),
        "republish_all": Param(
            DEFAULTS["republish_all"],
            type="boolean",
            title="Republish every product",
            section=WHAT,
            description_md="Off: only products whose published document changed since the last publish to the topic "
            "are sent (and a tombstone for each product gone from the catalog). On: send every product again, e.g. "
            "to fill a new index or replay the topic.",
        ),
        "accept_partition_change": Param(
            DEFAULTS["accept_partition_change"],
            type="boolean",
            title="Accept added topic partitions",
            section=WHAT,
            description_md="Off: a publish to a topic that gained partitions since the last publish fails before "
            "sending (a product's next message could land beside its live one, not over it). On: read the topic "
            "back and go on; better, publish into a new topic with `republish_all`.",
        ),
        "dry_run": Param(
            DEFAULTS["dry_run"],
            type="boolean",
            title="Dry run",
            section=WHAT,
            description_md="On: plan only. The run lists what it would upload, delete and publish (its logs, XComs "
            "and run report) and changes nothing: no upload, no deletion, no Kafka message, no latest copy.",
        ),
        "bucket": Param(
            DEFAULTS["bucket"],
            type="string",
            **BUCKET_RULES,
            title="S3 bucket",
            section=WHERE,
            description_md="The bucket the images go to, e.g. `product-images`: 3-63 characters, lowercase letters, "
            "digits, dots and hyphens, starting and ending with a letter or digit, no `..`, not an IP address.",
        ),
        "prefix": Param(
            DEFAULTS["prefix"],
            type=["null", "string"],
            pattern=r"^[^\x00-\x1f]{0,512}$",
            title="Key prefix",
            section=WHERE,
            description_md="Objects are stored as `{prefix}/{file name}`: `products` gives `products/PROD-1.jpg`; "
            "images from date folders go under their day, `products/2025-06-01/PROD-1.jpg`. "
            "Empty: no prefix. At most 512 characters, no control characters.",
        ),
        "topic": Param(
            DEFAULTS["topic"],
            type="string",
            pattern=TOPIC_PATTERN,
            title="Kafka topic",
            section=WHERE,
            description_md="The topic the catalog is published to, one message per product (key: product id); the "
            "indexer follows every publish and indexes this topic. 1-249 letters, digits, `.`, `_` or `-`.",
        ),
        "public_base_url": Param(
            DEFAULTS["public_base_url"],
            type=["null", "string"],
            pattern=r"^(https?://\S+)?$",
            title="Public base URL (optional)",
            section=WHERE,
            description_md="**Empty**: the catalog gets the images' S3 addresses. Set it to a CDN in front of the "
            "bucket to get `{public_base_url}/{key}` instead, e.g. `https://cdn.example.com`.",
        ),
        "batch_size": Param(
            DEFAULTS["batch_size"],
            type="integer",
            minimum=1,
            maximum=100000,
            title="Images per upload task",
            section=HOW,
            description_md="Each batch is one mapped task, retried alone. Batches also close at 256 MB, and grow "
            "when needed to stay within `[core] max_map_length`. From 1 to 100,000.",
        ),
        "upload_concurrency": Param(
            DEFAULTS["upload_concurrency"],
            type="integer",
            minimum=1,
            maximum=256,
            title="Uploads in flight per task",
            section=HOW,
            description_md="Concurrent PUT requests inside one upload task, from 1 to 256.",
        ),
        "server_side_encryption": Param(
            DEFAULTS["server_side_encryption"],
            type="string",
            enum=ENCRYPTIONS,
            values_display={
                "bucket default": "Bucket default",
                "AES256": "AES256 (SSE-S3)",
                "aws:kms": "aws:kms (SSE-KMS)",
            },
            title="Server-side encryption",
            section=SAFETY,
            description_md="Encryption asked for on every uploaded image. *Bucket default*: the bucket's own applies.",
        ),
        "sse_kms_key_id": Param(
            DEFAULTS["sse_kms_key_id"],
            type=["null", "string"],
            pattern=r"^[^\x00-\x1f\s]{0,2048}$",
            title="KMS key (optional)",
            section=SAFETY,
            description_md="Only with *aws:kms*: the key id or ARN, e.g. `arn:aws:kms:eu-west-1:111122223333:key/...`. "
            "**Empty**: the account's `aws/s3` key. No spaces.",
        ),
        "delete_removed_images": Param(
            DEFAULTS["delete_removed_images"],
            type="boolean",
            title="Delete objects of removed images",
            section=SAFETY,
            description_md="Off: objects stay in the bucket when their image leaves the folder. On: delete the objects "
            "of the run's scope (a flat folder: directly under the prefix; date folders: the run's days) that no image "
            "has any more, on the second run that finds them so (the index has let go of them by then). Nothing is "
            "deleted when the scan could not read part of the folder, without a prefix, or when more than *Most "
            "removals per run* objects would go.",
        ),
        "max_deletions": Param(
            DEFAULTS["max_deletions"],
            type="integer",
            minimum=0,
            title="Most removals per run",
            section=SAFETY,
            description_md="A product published before and gone from the catalog gets a tombstone, and the indexer "
            "deletes it. When more than this many products (or, with deletion on, objects) would go, the run fails "
            "before removing any (a wrong catalog file must not empty the index); an empty catalog removes nothing. "
            "At most the deployment's `PUBLISHER_MAX_DELETIONS` (default 1,000).",
        ),
        "max_failed_percent": Param(
            DEFAULTS["max_failed_percent"],
            type="number",
            minimum=0,
            maximum=100,
            title="Tolerated failed images (%)",
            section=SAFETY,
            description_md="The run fails when more than this share of its images failed to upload (after "
            "retries); `0` fails on the first. The URL mapping lists each failure with its reason.",
        ),
    },
)
def publish_product_images():
    # multiple_outputs=False: a task annotated `-> dict` would also push each key of its result as an XCom of its
    # own, one API call each; the tasks read the whole result.
    @task(multiple_outputs=False, task_display_name="Find the run's images", map_index_template="{{ shard_label }}")
    def build_manifest(
        shard: dict, params=None, dag_run=None, data_interval_start=None, data_interval_end=None
    ) -> dict:
        from include.catalog_publisher import allowed_outputs, publisher_tasks
        from include.catalog_publisher.manifest import Shard
        from include.catalog_publisher.partitions import covered_days

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
        from airflow.sdk.exceptions import DownstreamTasksSkipped

        from include.catalog_publisher import publisher_tasks

        max_batches = conf.getint("core", "max_map_length")
        batches, manifest = publisher_tasks.plan_batches(
            _run(dag_run, params),
            mapped_values(parts),
            params["batch_size"],
            max_batches,
            params["bucket"],
            params["prefix"] or "",
            params["force_reupload"],
        )
        # The merged manifest, for the tasks after (mapped over the batches, the return value must be their list).
        ti.xcom_push(key="manifest", value=manifest)
        if not batches:
            # Nothing to upload: skip the uploads from here, as ShortCircuitOperator does. Left to expand to zero
            # batches, they would cost the run an idle scheduling loop.
            raise DownstreamTasksSkipped(tasks=["upload_batch"])
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
    def publish_to_kafka(catalog: dict, manifest: dict, params=None, dag_run=None, outlet_events=None) -> dict:
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
        if params["dry_run"] or not (result["published"] or result["removed"] or behind != 0):
            return result  # nothing was sent and the indexer has it all: no indexer run for nothing
        event = {
            "topic": result["topic"],
            "products": result["published"],
            "removed": result["removed"],
            "indexer_behind": behind,
            "catalog": catalog["catalog"],
        }
        outlet_events[PUBLISHED_TOPICS].add(topic_asset(result["topic"]), extra=event)  # the asset of this topic
        return result

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
