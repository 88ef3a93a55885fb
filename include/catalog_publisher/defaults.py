"""The pipeline's fixed names and defaults, shared by the DAGs' params (params.py) and the runbook commands' flags
(docs/design.md, "Contracts"); the deployment's environment settings are in settings.py."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TOPIC = "products"
# Messages the indexer cannot index (not JSON, rejected by Elasticsearch) go here with their error.
DEAD_LETTER_SUFFIX = ".dlq"
DEFAULT_INDEX = "products"
DEFAULT_PREFIX = "products"
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

# What a run does by default: the DAGs' params (params.py) and the runbook commands' flags.
# Images per upload batch (one mapped task each). Under a scheduler each task is a process of its own, and a few
# large tasks upload faster than many small ones (bench/scheduled_runs.py compares batch sizes).
DEFAULT_BATCH_IMAGES = 25_000
DEFAULT_UPLOAD_CONCURRENCY = 32  # uploads in flight per batch
DEFAULT_MAX_FAILED_PERCENT = 0  # a run fails on more failed images than this share
DEFAULT_GROUP_ID = "catalog-indexer"  # the indexer's Kafka consumer group
DEFAULT_INDEX_BATCH = 500  # messages per Elasticsearch bulk request


def project_root() -> Path:
    """The folder holding include/ (and dags/, plugins/): a checkout, an Astro project, or AIRFLOW_HOME in
    the official image. The package is never installed; it is imported from here, so this is always right."""
    return Path(__file__).resolve().parents[2]


def project_home() -> Path:
    """Where relative paths (data/...) resolve: $CATALOG_PUBLISHER_HOME, else the project root."""
    from include.catalog_publisher import settings

    home = settings.value(settings.HOME)
    return Path(home) if home else project_root()


def resolve(path: str | os.PathLike) -> Path:
    """A path as the user wrote it, anchored at the project home when relative."""
    p = Path(path)
    return p if p.is_absolute() else project_home() / p
