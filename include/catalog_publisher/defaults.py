"""Defaults shared by the DAGs and the runbook scripts (docs/design.md, "Contracts")."""

from __future__ import annotations

import os
from pathlib import Path

from include.catalog_publisher.errors import PublisherError

DEFAULT_TOPIC = "products"
# Messages the indexer cannot index (not JSON, rejected by Elasticsearch) go here with their error.
DEAD_LETTER_SUFFIX = ".dlq"
DEFAULT_INDEX = "products"
DEFAULT_PREFIX = "products"
DEFAULT_BUCKET = "product-images"
# The field that names a product in the catalog; `id` is accepted when it is absent.
PRODUCT_ID_FIELDS = ("product_id", "id")
IMAGE_URL_FIELD = "image_url"
# Set by date-partitioned runs: the day of the product's image folder, its version (newest wins everywhere).
IMAGE_DATE_FIELD = "image_date"
# Set by the DAG: the SHA-256 of the product's image, so a new picture at the same URL changes the product
# (it is republished, and consumers can tell caches apart); the runbook's commands leave it out.
IMAGE_SHA256_FIELD = "image_sha256"

# The runbook's file locations, relative to the project home.
MANIFEST_FILE = "data/s3_upload_manifest.json"
URL_MAPPING_FILE = "data/s3_url_mapping.json"
CATALOG_FILE = "data/products.json"
UPDATED_CATALOG_FILE = "data/products_with_s3_urls.json"
IMAGES_DIR = "data/images"

# What a run does by default, for the DAGs' forms (dag_defaults.py). batching.py, upload.py and indexer.py
# still carry the same values for the runbook flags; tests/dags/test_dag_integrity.py checks they agree.
DEFAULT_BATCH_IMAGES = 2000  # images per upload batch (one mapped task each)
DEFAULT_UPLOAD_CONCURRENCY = 32  # uploads in flight per batch
DEFAULT_MAX_FAILED_PERCENT = 0  # a run fails on more failed images than this share
# Date folders a scheduled run looks at before its own day: files that landed in a folder after its day's run.
LOOKBACK_DAYS_ENV = "PUBLISHER_LOOKBACK_DAYS"
DEFAULT_LOOKBACK_DAYS = 2
DEFAULT_MAX_DELETIONS = 1000  # a run fails, removing nothing, when it would remove more products (or objects)
DEFAULT_GROUP_ID = "catalog-indexer"  # the indexer's Kafka consumer group
DEFAULT_INDEX_BATCH = 500  # messages per Elasticsearch bulk request

# Deployment settings, read from the environment of the dag-processor, scheduler and workers alike.
BUCKET_ENV = "PUBLISHER_BUCKET"  # the bucket param's default; DEFAULT_BUCKET when unset
SCHEDULE_ENV = "PUBLISHER_SCHEDULE"  # a cron expression or preset, or "none" for manual runs only
DEFAULT_SCHEDULE = "@daily"
# The time zone that names the date folders: a scheduled run at 00:00 there publishes the day that ended.
TIMEZONE_ENV = "PUBLISHER_TIMEZONE"
DEFAULT_TIMEZONE = "UTC"
# How many build_manifest tasks share a run's images (by product id), each on any worker: raise it when one task
# hashing every new file is the bottleneck (a first publish of millions); 1 keeps small runs to one task.
MANIFEST_SHARDS_ENV = "PUBLISHER_MANIFEST_SHARDS"
DEFAULT_MANIFEST_SHARDS = 1
MAX_MANIFEST_SHARDS = 256


def project_root() -> Path:
    """The folder holding include/ (and dags/, plugins/): a checkout, an Astro project, or AIRFLOW_HOME in
    the official image. The package is never installed; it is imported from here, so this is always right."""
    return Path(__file__).resolve().parents[2]


def project_home() -> Path:
    """Where relative paths (data/...) resolve: $CATALOG_PUBLISHER_HOME, else the project root."""
    env = os.environ.get("CATALOG_PUBLISHER_HOME")
    return Path(env) if env else project_root()


def resolve(path: str | os.PathLike) -> Path:
    """A path as the user wrote it, anchored at the project home when relative."""
    p = Path(path)
    return p if p.is_absolute() else project_home() / p


def whole_number(env: str, value: str | None, default: int, low: int, high: int | None = None) -> int:
    """A whole-number setting: `value`, else the environment's `env`; `default` when unset; within [low, high]."""
    value = (value if value is not None else os.environ.get(env, "")).strip()
    number = int(value) if value.isdigit() else default if not value else low - 1
    if number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"of {low} or more"
        raise PublisherError(f"{env}={value!r} must be a whole number {bounds}")
    return number
