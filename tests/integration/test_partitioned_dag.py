"""Date-partitioned images: a run at a logical date publishes exactly that day's images and products."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from devstack import local_airflow
from tests.helpers import make_kafka_topic, read_topic, s3_client, write_catalog, write_image

DAYS = {"2025-06-01": ["PROD-A1", "PROD-A2"], "2025-06-02": ["PROD-B1", "PROD-B2", "PROD-B3"], "2025-06-03": ["PROD-C1"]}


def test_a_run_takes_its_days_folder_and_republishes_only_its_products(stack, airflow_db, tmp_path, s3):
    for day, ids in DAYS.items():
        for i, pid in enumerate(ids):
            write_image(tmp_path / "images" / day / f"{pid}.jpg", seed=i)
    products = [{"product_id": pid, "name": pid, "image_url": f"data/images/{pid}.jpg"} for ids in DAYS.values() for pid in ids]
    write_catalog(tmp_path / "products.json", products)
    bucket = f"day-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    topic = make_kafka_topic(stack.kafka_bootstrap, f"day-{uuid.uuid4().hex[:8]}")
    conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(tmp_path / "products.json"), "bucket": bucket, "topic": topic}

    run = local_airflow.run_dag("publish_product_images", conf, logical_date=datetime(2025, 6, 2, tzinfo=UTC))

    assert run.succeeded, run.task_states
    assert run.xcoms["build_manifest"]["date_folders"] == "2025-06-02"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["products/PROD-B1.jpg", "products/PROD-B2.jpg", "products/PROD-B3.jpg"]
    catalog = json.loads(Path(run.xcoms["update_catalog"]["catalog"]).read_text())
    assert [p["product_id"] for p in catalog] == DAYS["2025-06-02"]
    assert all(p["image_url"].startswith(f"{stack.s3_endpoint}/{bucket}/products/") for p in catalog)
    assert run.xcoms["update_catalog"]["left_out"] == 3
    assert sorted(k for k, _ in read_topic(stack.kafka_bootstrap, topic)) == DAYS["2025-06-02"]


def test_a_day_without_a_folder_skips_the_run(stack, airflow_db, tmp_path):
    write_image(tmp_path / "images" / "2025-06-01" / "PROD-A1.jpg")
    write_catalog(tmp_path / "products.json", [{"product_id": "PROD-A1"}])
    conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(tmp_path / "products.json"), "bucket": "product-images", "topic": "products"}

    run = local_airflow.run_dag("publish_product_images", conf, logical_date=datetime(2025, 7, 1, tzinfo=UTC))

    assert run.succeeded
    assert run.task_states["build_manifest"] == ["skipped"]
    assert run.task_states["publish_to_kafka"] == ["skipped"]
