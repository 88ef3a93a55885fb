"""The two DAGs' params, each defined once: its default, its rule (JSON Schema: the trigger form and the REST API
check it) and its text in the form. The DAG files take them whole; the tasks read them by name.

The forms show them in this order (the most used first), in these sections. Read when the DAG files are parsed
(so are the defaults that follow settings: PUBLISHER_BUCKET, PUBLISHER_MAX_DELETIONS). Each description states its
rule: a refused value is answered with the rule that failed and the param's title and description.
"""

from __future__ import annotations

from typing import Any

from include.catalog_publisher import defaults, settings
from include.catalog_publisher.allowed_outputs import max_deletions_ceiling
from include.catalog_publisher.dag_defaults import (
    BUCKET_RULES,
    ENCRYPTIONS,
    IMAGE_LAYOUTS,
    PATH_PATTERN,
    TIMEZONE,
    TOPIC_PATTERN,
)
from include.catalog_publisher.run_artifacts import latest_copy

PUBLISH_WHAT = "What to publish"
PUBLISH_WHERE = "Where it goes"
PUBLISH_HOW = "How: batching and concurrency"
PUBLISH_SAFETY = "Safety: encryption and failures"
INDEX_WHAT = "What to index (manual runs)"
INDEX_WHERE = "Where it goes"
INDEX_HOW = "How: batching, consumers and offsets"


_PUBLISHER = {  # name -> Param's arguments
    "images_dir": dict(
        default=settings.value(settings.IMAGES_DIR),
        type="string",
        minLength=1,
        pattern=PATH_PATTERN,
        title="Images folder",
        section=PUBLISH_WHAT,
        description_md="Folder of product images (JPEG, PNG, WebP, GIF, AVIF), searched recursively; the file "
        "name without extension is the product id. A relative path starts at the project home, e.g. "
        "`data/images`, or a landing bucket, `s3://bucket/prefix` (other places: list them in "
        "`PUBLISHER_ALLOWED_INPUTS`). If it holds `YYYY-MM-DD` folders, a run takes its day's.",
    ),
    "day": dict(
        default=None,
        type=["null", "string"],
        format="date",
        title="Day (date folders only)",
        section=PUBLISH_WHAT,
        description_md="The `YYYY-MM-DD` folder to publish, e.g. `2025-06-01`. **Empty**: the run's data "
        "interval: a scheduled run takes the day that just ended, a manual run the last complete day "
        f"before its logical date (yesterday, for a run triggered now). Days are dated in {TIMEZONE.name}. "
        "Ignored for a folder without date folders.",
    ),
    "catalog_file": dict(
        default=settings.value(settings.CATALOG_FILE),
        type="string",
        minLength=1,
        pattern=PATH_PATTERN,
        title="Catalog file",
        section=PUBLISH_WHAT,
        description_md="The product catalog to rewrite with the image URLs: a JSON array, an object with a "
        "`products` array, or JSON Lines. A path (relative to the project home) or `s3://bucket/key`, "
        "e.g. `data/products.json`.",
    ),
    "images_layout": dict(
        default="auto",
        type="string",
        enum=IMAGE_LAYOUTS,
        values_display={
            "auto": "Auto: date folders if there are any",
            "flat": "Flat: the whole folder every run",
            "daily": "Daily: the run's YYYY-MM-DD folders",
        },
        title="Folder layout",
        section=PUBLISH_WHAT,
        description_md="How to read the images folder. *Auto* looks for `YYYY-MM-DD` folders.",
    ),
    "force_reupload": dict(
        default=False,
        type="boolean",
        title="Re-upload unchanged images",
        section=PUBLISH_WHAT,
        description_md="Off: images the bucket already holds with the same size and MD5 are skipped and keep "
        "their URL. On: upload every image again, e.g. after objects were changed outside this pipeline.",
    ),
    "republish_all": dict(
        default=False,
        type="boolean",
        title="Republish every product",
        section=PUBLISH_WHAT,
        description_md="Off: only products whose published document changed since the last publish to the topic "
        "are sent (and a tombstone for each product gone from the catalog). On: send every product again, e.g. "
        "to fill a new index or replay the topic.",
    ),
    "accept_partition_change": dict(
        default=False,
        type="boolean",
        title="Accept added topic partitions",
        section=PUBLISH_WHAT,
        description_md="Off: a publish to a topic that gained partitions since the last publish fails before "
        "sending (a product's next message could land beside its live one, not over it). On: read the topic "
        "back and go on; better, publish into a new topic with `republish_all`.",
    ),
    "dry_run": dict(
        default=False,
        type="boolean",
        title="Dry run",
        section=PUBLISH_WHAT,
        description_md="On: plan only. The run lists what it would upload, delete and publish (its logs, XComs "
        "and run report) and changes nothing: no upload, no deletion, no Kafka message, no latest copy.",
    ),
    "bucket": dict(
        default=settings.value(settings.BUCKET),
        type="string",
        **BUCKET_RULES,
        title="S3 bucket",
        section=PUBLISH_WHERE,
        description_md="The bucket the images go to, e.g. `product-images`: 3-63 characters, lowercase letters, "
        "digits, dots and hyphens, starting and ending with a letter or digit, no `..`, not an IP address.",
    ),
    "prefix": dict(
        default=defaults.DEFAULT_PREFIX,
        type=["null", "string"],
        pattern=r"^[^\x00-\x1f]{0,512}$",
        title="Key prefix",
        section=PUBLISH_WHERE,
        description_md="Objects are stored as `{prefix}/{file name}`: `products` gives `products/PROD-1.jpg`; "
        "images from date folders go under their day, `products/2025-06-01/PROD-1.jpg`. "
        "Empty: no prefix. At most 512 characters, no control characters.",
    ),
    "topic": dict(
        default=defaults.DEFAULT_TOPIC,
        type="string",
        pattern=TOPIC_PATTERN,
        title="Kafka topic",
        section=PUBLISH_WHERE,
        description_md="The topic the catalog is published to, one message per product (key: product id); the "
        "indexer follows every publish and indexes this topic. 1-249 letters, digits, `.`, `_` or `-`.",
    ),
    "public_base_url": dict(
        default=None,
        type=["null", "string"],
        pattern=r"^(https?://\S+)?$",
        title="Public base URL (optional)",
        section=PUBLISH_WHERE,
        description_md="**Empty**: the catalog gets the images' S3 addresses. Set it to a CDN in front of the "
        "bucket to get `{public_base_url}/{key}` instead, e.g. `https://cdn.example.com`.",
    ),
    "batch_size": dict(
        default=defaults.DEFAULT_BATCH_IMAGES,
        type="integer",
        minimum=1,
        maximum=100000,
        title="Images per upload task",
        section=PUBLISH_HOW,
        description_md="Each batch is one mapped task, retried alone. Batches also close at 1 GB, and grow "
        "when needed to stay within `[core] max_map_length`. From 1 to 100,000.",
    ),
    "upload_concurrency": dict(
        default=defaults.DEFAULT_UPLOAD_CONCURRENCY,
        type="integer",
        minimum=1,
        maximum=256,
        title="Uploads in flight per task",
        section=PUBLISH_HOW,
        description_md="Concurrent PUT requests inside one upload task, from 1 to 256.",
    ),
    "server_side_encryption": dict(
        default="bucket default",
        type="string",
        enum=ENCRYPTIONS,
        values_display={
            "bucket default": "Bucket default",
            "AES256": "AES256 (SSE-S3)",
            "aws:kms": "aws:kms (SSE-KMS)",
        },
        title="Server-side encryption",
        section=PUBLISH_SAFETY,
        description_md="Encryption asked for on every uploaded image. *Bucket default*: the bucket's own applies.",
    ),
    "sse_kms_key_id": dict(
        default=None,
        type=["null", "string"],
        pattern=r"^[^\x00-\x1f\s]{0,2048}$",
        title="KMS key (optional)",
        section=PUBLISH_SAFETY,
        description_md="Only with *aws:kms*: the key id or ARN, e.g. `arn:aws:kms:eu-west-1:111122223333:key/...`. "
        "**Empty**: the account's `aws/s3` key. No spaces.",
    ),
    "delete_removed_images": dict(
        default=False,
        type="boolean",
        title="Delete objects of removed images",
        section=PUBLISH_SAFETY,
        description_md="Off: objects stay in the bucket when their image leaves the folder. On: delete the objects "
        "of the run's scope (a flat folder: directly under the prefix; date folders: the run's days) that no image "
        "has any more, on the second run that finds them so (the index has let go of them by then). Nothing is "
        "deleted when the scan could not read part of the folder, without a prefix, or when more than *Most "
        "removals per run* objects would go.",
    ),
    "max_deletions": dict(
        default=min(settings.MAX_DELETIONS.default, max_deletions_ceiling()),
        type="integer",
        minimum=0,
        title="Most removals per run",
        section=PUBLISH_SAFETY,
        description_md="A product published before and gone from the catalog gets a tombstone, and the indexer "
        "deletes it. When more than this many products (or, with deletion on, objects) would go, the run fails "
        "before removing any (a wrong catalog file must not empty the index); an empty catalog removes nothing. "
        "At most the deployment's `PUBLISHER_MAX_DELETIONS` (default 1,000).",
    ),
    "max_failed_percent": dict(
        default=defaults.DEFAULT_MAX_FAILED_PERCENT,
        type="number",
        minimum=0,
        maximum=100,
        title="Tolerated failed images (%)",
        section=PUBLISH_SAFETY,
        description_md="The run fails when more than this share of its images failed to upload (after "
        "retries); `0` fails on the first. The URL mapping lists each failure with its reason.",
    ),
}


_INDEXER = {
    "topic": dict(
        default=defaults.DEFAULT_TOPIC,
        type="string",
        pattern=TOPIC_PATTERN,
        title="Kafka topic",
        section=INDEX_WHAT,
        description_md="The topic to index, e.g. `products`. Runs started by a publish index the topic it "
        "published to. 1-249 letters, digits, `.`, `_` or `-`.",
    ),
    "catalog_file": dict(
        default=latest_copy("publish_product_images", defaults.UPDATED_CATALOG_FILE),
        type="string",
        minLength=1,
        pattern=PATH_PATTERN,
        title="Catalog to verify",
        section=INDEX_WHAT,
        description_md="The catalog whose products must be searchable afterwards: by default the last "
        "publish's (`data/products_with_s3_urls.json` relative to the project home, or its latest copy under "
        "`PUBLISHER_ARTIFACTS_URL`). Runs started by a publish verify the catalog it wrote.",
    ),
    "index": dict(
        default=defaults.DEFAULT_INDEX,
        type="string",
        maxLength=255,
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        title="Elasticsearch index",
        section=INDEX_WHERE,
        description_md="The alias searches read and the indexer writes through, e.g. `products`; when missing, "
        "made in front of a first version (`products-<time>-<digits>`) with the catalog mapping. Lowercase letters, "
        "digits, `.`, `_` and `-`, starting with a letter or digit.",
    ),
    "group_id": dict(
        default=defaults.DEFAULT_GROUP_ID,
        type="string",
        minLength=1,
        pattern=PATH_PATTERN,
        title="Consumer group",
        section=INDEX_HOW,
        description_md="The Kafka consumer group whose committed offsets say where indexing resumes. A new "
        "group reads the topic from the start (a full re-index).",
    ),
    "batch_size": dict(
        default=defaults.DEFAULT_INDEX_BATCH,
        type="integer",
        minimum=1,
        maximum=10000,
        title="Messages per bulk request",
        section=INDEX_HOW,
        description_md="Documents per Elasticsearch bulk request; offsets are committed after each. 1 to 10,000.",
    ),
    # One consumer per topic by default: more pay off only against an Elasticsearch that indexes in parallel
    # (bench/indexer_consumers.py compares them), and every consumer joining costs a group rebalance.
    "consumers": dict(
        default=1,
        type=["null", "integer"],
        minimum=1,
        maximum=256,
        title="Consumers per topic",
        section=INDEX_HOW,
        description_md="Members of the consumer group that index a topic side by side, one mapped task each, "
        "e.g. `3`; default 1. Empty: one per partition of the topic. Never more than the topic has partitions "
        "(one more would hold none).",
    ),
}


REBUILD_WHAT = "What to do"
_REBUILD = {
    "action": dict(
        default="rebuild",
        type="string",
        enum=["rebuild", "rollback"],
        title="Rebuild or roll back",
        section=REBUILD_WHAT,
        description_md="`rebuild`: a new version of the index with the code's mapping, filled from the topic "
        "beside the live one, checked against the catalog, then swapped in. `rollback`: the alias goes back to the "
        "version before the live one, caught up from the topic first.",
    ),
    **{name: {**_INDEXER[name], "section": REBUILD_WHAT} for name in ("index", "topic")},
    "catalog_file": {
        **_INDEXER["catalog_file"],
        "section": REBUILD_WHAT,
        "description_md": "The catalog the new version is verified against before the swap (its count, every id, "
        "a sample of documents compared byte for byte): by default the last publish's.",
    },
    "group_id": {
        **_INDEXER["group_id"],
        "description_md": "The live indexer's consumer group: the new version must stand at or past its committed "
        "offsets before the swap. The replay uses a group of its own, `<group>.rebuild.<new index>`.",
    },
    "batch_size": _INDEXER["batch_size"],
}


def rebuild_params() -> dict[str, Any]:
    """rebuild_product_index's params, new Param objects each call."""
    from airflow.sdk import Param

    return {name: Param(**arguments) for name, arguments in _REBUILD.items()}


def publisher_params() -> dict[str, Any]:
    """publish_product_images' params, new Param objects each call (a DAG's params are its own)."""
    from airflow.sdk import Param  # after dag_defaults checked the Airflow version

    return {name: Param(**arguments) for name, arguments in _PUBLISHER.items()}


def indexer_params() -> dict[str, Any]:
    """index_product_catalog's params, new Param objects each call."""
    from airflow.sdk import Param

    return {name: Param(**arguments) for name, arguments in _INDEXER.items()}


def param_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """Each param's default, by name."""
    return {name: param.value for name, param in params.items()}
