"""Defaults shared by the DAGs and the runbook scripts (docs/design.md, "Contracts")."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TOPIC = "products"
# Messages the indexer cannot index (not JSON, rejected by Elasticsearch) go here with their error.
DEAD_LETTER_SUFFIX = ".dlq"
DEFAULT_INDEX = "products"
DEFAULT_PREFIX = "products"
DEFAULT_BUCKET = "product-images"
# The field that names a product in the catalog; `id` is accepted when it is absent.
PRODUCT_ID_FIELDS = ("product_id", "id")
IMAGE_URL_FIELD = "image_url"

# The runbook's file locations, relative to the project home.
MANIFEST_FILE = "data/s3_upload_manifest.json"
URL_MAPPING_FILE = "data/s3_url_mapping.json"
CATALOG_FILE = "data/products.json"
UPDATED_CATALOG_FILE = "data/products_with_s3_urls.json"
IMAGES_DIR = "data/images"


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
