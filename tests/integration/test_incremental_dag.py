"""Incremental publishing through the DAG: a second run with no changes uploads nothing and maps everything."""

from __future__ import annotations

import uuid

from devstack import local_airflow, sample_data
from tests.helpers import make_kafka_topic, s3_client, write_image


def test_rerun_skips_unchanged_images_uploads_changed_ones_and_force_reuploads_all(stack, airflow_db, tmp_path):
    sample_data.generate(tmp_path, count=24, min_kb=2, max_kb=10)
    bucket = f"inc-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    topic = make_kafka_topic(stack.kafka_bootstrap, f"inc-{uuid.uuid4().hex[:8]}")
    conf = {
        "images_dir": str(tmp_path / "images"),
        "catalog_file": str(tmp_path / "products.json"),
        "bucket": bucket,
        "topic": topic,
        "batch_size": 10,
    }

    first = local_airflow.run_dag("publish_product_images", conf)
    images = first.xcoms["build_manifest"]["images"]
    assert first.succeeded and first.xcoms["merge_url_mapping"]["uploaded_images"] == images

    second = local_airflow.run_dag("publish_product_images", conf)
    mapping = second.xcoms["merge_url_mapping"]
    assert second.succeeded
    assert (mapping["uploaded_images"], mapping["skipped_images"], mapping["failed_images"]) == (0, images, 0)
    assert (
        second.xcoms["update_catalog"]["updated"] == first.xcoms["update_catalog"]["updated"]
    )  # the mapping is complete

    formats = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".avif": "AVIF"}
    for path in sorted((tmp_path / "images").iterdir())[2:5]:  # three images change content, same name and format
        write_image(path, formats[path.suffix], seed=99, side=31)
    third = local_airflow.run_dag("publish_product_images", conf)
    assert (
        third.xcoms["merge_url_mapping"]["uploaded_images"],
        third.xcoms["merge_url_mapping"]["skipped_images"],
    ) == (3, images - 3)

    forced = local_airflow.run_dag("publish_product_images", {**conf, "force_reupload": True})
    assert (
        forced.xcoms["merge_url_mapping"]["uploaded_images"],
        forced.xcoms["merge_url_mapping"]["skipped_images"],
    ) == (images, 0)
