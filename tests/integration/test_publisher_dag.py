"""publish_product_images end to end with dag.test() against real SeaweedFS and Tansu."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from devstack import local_airflow
from include.catalog_publisher.run_artifacts import RunArtifacts
from tests.helpers import read_topic, write_catalog
from tests.integration.conftest import BATCH_SIZE

PIL_TO_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "AVIF": "image/avif"}


def source_images(data: Path) -> dict[str, Path]:
    """product id -> file, for every real image under data/images (judged by Pillow, not by us)."""
    found = {}
    for path in sorted((data / "images").rglob("*")):
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception:  # noqa: BLE001 - anything Pillow cannot open is not an image
            continue
        found[path.name.rsplit(".", 1)[0]] = path
    return found


def test_the_run_succeeds_with_one_mapped_task_per_batch(published):
    run = published["run"]
    assert run.succeeded, run.task_states
    images = len(source_images(published["data"]))
    assert run.task_states["upload_batch"] == ["success"] * math.ceil(images / BATCH_SIZE)
    labels = run.labels["upload_batch"]
    assert labels[0].startswith(f"batch 0: {BATCH_SIZE} images, ") and labels[0].endswith(" MB")
    assert [label.split(":")[0] for label in labels] == [f"batch {i}" for i in range(len(labels))]
    assert run.result("merge_url_mapping")["uploaded_images"] == images
    assert run.xcoms["build_manifest"][0]["skipped_files"] == 1  # the text file named .jpg


def test_every_object_equals_its_source_with_the_right_content_type(published, s3):
    bucket = published["bucket"]
    images = source_images(published["data"])
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, MaxKeys=1000)["Contents"]}
    assert listed == {f"products/{path.name}" for path in images.values()}
    for path in images.values():
        obj = s3.get_object(Bucket=bucket, Key=f"products/{path.name}")
        assert obj["Body"].read() == path.read_bytes(), path
        with Image.open(path) as image:
            assert obj["ContentType"] == PIL_TO_MIME[image.format], path


def test_artifacts_are_in_the_reference_formats_at_the_reference_paths(published):
    run, stack, bucket = published["run"], published["stack"], published["bucket"]
    manifest = json.loads(published["latest"]["s3_upload_manifest.json"])
    mapping = json.loads(published["latest"]["s3_url_mapping.json"])
    images = source_images(published["data"])

    assert {"timestamp", "total_images", "total_size_bytes", "total_size_mb", "images"} <= manifest.keys()
    assert {(i["product_id"], i["file_size"]) for i in manifest["images"]} == {
        (pid, p.stat().st_size) for pid, p in images.items()
    }
    assert all({"product_id", "file_path", "file_size", "content_type"} <= i.keys() for i in manifest["images"])

    assert {
        "timestamp",
        "bucket_name",
        "prefix",
        "total_images",
        "uploaded_images",
        "failed_images",
        "product_to_s3_url",
    } <= mapping.keys()
    assert (mapping["bucket_name"], mapping["prefix"], mapping["failed_images"]) == (bucket, "products", 0)
    assert mapping["product_to_s3_url"] == {
        pid: f"{stack.s3_endpoint}/{bucket}/products/{path.name}".replace(" ", "%20") for pid, path in images.items()
    }
    # The run's own copies, under its per-run folder, are the same files.
    artifacts = RunArtifacts("publish_product_images", run.run_id)
    assert json.loads(artifacts.url_mapping.read_text()) == mapping
    assert artifacts.manifest.read_bytes() == published["latest"]["s3_upload_manifest.json"]


def test_the_catalog_carries_the_s3_urls_and_keeps_every_other_field(published):
    source = json.loads((published["data"] / "products.json").read_text())
    updated = json.loads(published["latest"]["products_with_s3_urls.json"])
    mapping = json.loads(published["latest"]["s3_url_mapping.json"])
    urls, checksums = mapping["product_to_s3_url"], mapping["product_image_sha256"]

    assert len(updated) == len(source)
    for before, after in zip(source, updated, strict=True):
        expected = dict(before)
        if before["product_id"] in urls:  # its URL, and its picture's SHA-256 (a new picture is a change)
            expected |= {"image_url": urls[before["product_id"]], "image_sha256": checksums[before["product_id"]]}
        assert after == expected
    summary = published["run"].result("update_catalog")
    assert summary["products_without_image"] == sum(1 for p in source if p["product_id"] not in urls) > 0
    assert summary["images_without_product"] == len(set(urls) - {p["product_id"] for p in source}) > 0


def test_the_topic_holds_one_message_per_product(published):
    messages = read_topic(published["stack"].kafka_bootstrap, published["topic"])
    catalog = json.loads(published["latest"]["products_with_s3_urls.json"])
    assert sorted(key for key, _ in messages) == sorted(p["product_id"] for p in catalog)
    assert {key: value for key, value in messages} == {p["product_id"]: p for p in catalog}
    assert published["run"].result("publish_to_kafka")["published"] == len(catalog)


def test_xcom_carries_only_paths_and_counts(published):
    """Each XCom is a flat record of scalars (or a list of them, one per batch): nothing grows with the catalog."""
    for task_id, value in published["run"].xcoms.items():
        records = value if isinstance(value, list) else [value]
        for record in records:
            assert isinstance(record, dict), task_id
            assert all(isinstance(v, (str, int, float, bool)) for v in record.values()), (task_id, record)
            assert all(len(v) < 400 for v in record.values() if isinstance(v, str)), (task_id, record)
    assert len(published["run"].xcoms["plan_batches"]) == len(published["run"].task_states["upload_batch"])
    # One XCom a task (not one more per key of its result: each is an API call), plus the merged manifest.
    keys = published["run"].xcom_keys
    assert keys.pop("plan_batches") == {"return_value", "manifest"}
    assert keys and all(task_keys == {"return_value"} for task_keys in keys.values()), keys


# -- bad input through the DAG: one clear error in the task that meets it, no retries, nothing downstream


def run_expecting_failure(conf_overrides, published, failing_task, capfd):
    data = published["data"]
    conf = {
        "images_dir": str(data / "images"),
        "catalog_file": str(data / "products.json"),
        "bucket": published["bucket"],
        "topic": published["topic"],
        "batch_size": 50,
    }
    run = local_airflow.run_dag("publish_product_images", {**conf, **conf_overrides})
    output = capfd.readouterr()
    assert run.state == "failed"
    assert set(run.task_states[failing_task]) == {"failed"}
    assert set(run.tries[failing_task]) == {1}, "a user error must not be retried"
    assert run.task_states["publish_to_kafka"] != ["success"]
    return output.out + output.err


def test_missing_images_dir_fails_build_manifest_with_the_path(published, capfd, tmp_path):
    missing = tmp_path / "no-images-here"
    log = run_expecting_failure({"images_dir": str(missing)}, published, "build_manifest", capfd)
    assert f"images directory {missing} does not exist; pass --images-dir (or the images_dir param)" in log


def test_catalog_that_is_not_json_fails_update_catalog_and_keeps_the_previous_output(
    published, capfd, tmp_path, project_home
):
    previous = (project_home / "data" / "products_with_s3_urls.json").read_bytes()
    bad = write_catalog(tmp_path / "catalog.json", [])
    bad.write_text("product_id,name\nPROD-1,Lamp\n")
    log = run_expecting_failure({"catalog_file": str(bad)}, published, "update_catalog", capfd)
    assert f"catalog {bad} is not JSON" in log
    assert (project_home / "data" / "products_with_s3_urls.json").read_bytes() == previous


@pytest.mark.fault(
    "a DAG run against a missing bucket",
    "plan_batches fails at once (no retries) naming the bucket; no upload task runs",
)
def test_missing_bucket_fails_the_planning_before_any_upload_naming_the_bucket(published, capfd):
    log = run_expecting_failure({"bucket": "no-such-bucket-anywhere"}, published, "plan_batches", capfd)
    assert (
        "bucket 'no-such-bucket-anywhere' at http://127.0.0.1:" in log
        and "does not exist; create it or pass the right bucket name" in log
    )
