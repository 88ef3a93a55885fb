"""The publisher run the integration tests share: one dag.test() run over sample data on the real stack."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from devstack import local_airflow, sample_data
from tests.helpers import s3_client, write_image

BATCH_SIZE = 10


@pytest.fixture(scope="session")
def published(stack, airflow_db, tmp_path_factory):
    """One successful run over sample data plus a nested folder, a non-image and a file with spaces."""
    data = tmp_path_factory.mktemp("publisher-data")
    sample_data.generate(data, count=45, min_kb=2, max_kb=30)
    write_image(data / "images" / "summer 2025" / "PROD-000900.png", "PNG", seed=9)
    (data / "images" / "PROD-000901.jpg").write_text("a text file with an image's name")
    bucket = f"it-{uuid.uuid4().hex[:10]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    topic = f"it-{uuid.uuid4().hex[:10]}"  # not created here: the publisher creates it, as on a fresh broker
    conf = {
        "images_dir": str(data / "images"),
        "catalog_file": str(data / "products.json"),
        "bucket": bucket,
        "topic": topic,
        "batch_size": BATCH_SIZE,
    }
    run = local_airflow.run_dag("publish_product_images", conf)
    # The runbook-path copies as this run left them (later runs in the session replace them).
    home = Path(os.environ["CATALOG_PUBLISHER_HOME"]) / "data"
    latest = {
        name: (home / name).read_bytes()
        for name in ("s3_upload_manifest.json", "s3_url_mapping.json", "products_with_s3_urls.json")
    }
    return {"run": run, "data": data, "bucket": bucket, "topic": topic, "stack": stack, "latest": latest}
