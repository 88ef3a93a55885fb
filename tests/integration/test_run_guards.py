"""Runs that must leave what earlier runs published as it was: a day without images (local artifacts and
object storage), and a catalog with a product the publish could not key. Real dag.test() runs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from devstack import local_airflow
from tests.helpers import make_kafka_topic, read_topic, s3_client, write_catalog, write_image

LATEST = ("s3_upload_manifest.json", "s3_url_mapping.json", "products_with_s3_urls.json")


def daily_conf(stack, folder) -> dict:
    """One date folder (2025-06-01) with two images, their catalog, a fresh bucket and topic."""
    for i, pid in enumerate(["PROD-A1", "PROD-A2"]):
        write_image(folder / "images" / "2025-06-01" / f"{pid}.jpg", seed=i)
    write_catalog(folder / "products.json", [{"product_id": "PROD-A1"}, {"product_id": "PROD-A2"}])
    bucket = f"guard-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    topic = make_kafka_topic(stack.kafka_bootstrap, f"guard-{uuid.uuid4().hex[:8]}")
    images, catalog = str(folder / "images"), str(folder / "products.json")
    return {"images_dir": images, "catalog_file": catalog, "bucket": bucket, "topic": topic}


@pytest.mark.fault(
    "a scheduled day without images (no folder, or an empty one) after a day with images (local artifacts)",
    "the run succeeds, uploads nothing and publishes nothing new; data/s3_upload_manifest.json and "
    "data/s3_url_mapping.json are left as they were (the next run's manifest reuse), the catalog is the same",
)
def test_a_day_without_images_leaves_the_latest_local_artifacts_as_they_were(stack, airflow_db, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(home))
    monkeypatch.delenv("PUBLISHER_ARTIFACTS_URL", raising=False)
    conf = daily_conf(stack, tmp_path)

    published = local_airflow.run_dag("publish_product_images", {**conf, "day": "2025-06-01"})
    assert published.succeeded, published.task_states
    before = {name: (home / "data" / name).read_bytes() for name in LATEST}
    assert json.loads(before["s3_url_mapping.json"])["uploaded_images"] == 2

    empty = local_airflow.run_dag("publish_product_images", {**conf, "day": "2025-06-02"})

    assert empty.succeeded, empty.task_states
    assert (empty.xcoms["build_manifest"][0]["images"], empty.task_states["upload_batch"]) == (0, ["skipped"])
    assert (empty.result("publish_to_kafka")["published"], empty.result("publish_to_kafka")["unchanged"]) == (0, 2)
    assert empty.result("update_catalog")["reused"]  # the same catalog and images: the last rewrite serves
    assert {name: (home / "data" / name).read_bytes() for name in LATEST} == before

    (Path(conf["images_dir"]) / "2025-06-03").mkdir()  # the day's folder exists, and is empty
    empty_folder = local_airflow.run_dag("publish_product_images", {**conf, "day": "2025-06-03"})
    assert empty_folder.succeeded and empty_folder.xcoms["build_manifest"][0]["images"] == 0
    assert {name: (home / "data" / name).read_bytes() for name in LATEST} == before


@pytest.mark.fault(
    "a scheduled day without images after a day with images (artifacts on object storage, PUBLISHER_ARTIFACTS_URL)",
    "the run succeeds and sends nothing; <prefix>/<dag>/latest/ keeps the manifest and URL mapping, the catalog and "
    "the state files are the same",
)
def test_a_day_without_images_leaves_latest_on_object_storage_as_it_was(stack, airflow_db, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("CATALOG_PUBLISHER_HOME", str(tmp_path / "worker"))
    artifacts = f"artifacts-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=artifacts)
    monkeypatch.setenv("PUBLISHER_ARTIFACTS_URL", f"s3://{artifacts}/runs")
    conf = daily_conf(stack, tmp_path)

    def latest() -> dict[str, bytes]:
        listed = s3.list_objects_v2(Bucket=artifacts, Prefix="runs/publish_product_images/latest/").get("Contents", [])
        objects = {o["Key"]: s3.get_object(Bucket=artifacts, Key=o["Key"])["Body"].read() for o in listed}
        return {key.rsplit("/", 1)[1]: body for key, body in objects.items()}

    assert local_airflow.run_dag("publish_product_images", {**conf, "day": "2025-06-01"}).succeeded
    before = latest()
    published_state = f"published-{conf['topic']}.json"  # what the topic holds, for the next run's publish
    rewrite_record = "catalog-rewrite.json"  # what the catalog was rewritten from, for the next run's reuse
    images_record = f"uploaded-images-{conf['bucket']}.json"  # each product's newest image, for the next run
    assert sorted(before) == sorted([*LATEST, published_state, rewrite_record, images_record])
    again = local_airflow.run_dag("publish_product_images", {**conf, "day": "2025-06-01"})
    assert again.result("publish_to_kafka")["unchanged"] == 2  # nothing sent again
    assert not list((tmp_path / "worker" / "data").glob("published-*.json"))  # no local latest copy: it is on S3
    before = latest()

    empty = local_airflow.run_dag("publish_product_images", {**conf, "day": "2025-06-02"})

    assert empty.succeeded, empty.task_states
    assert empty.result("publish_to_kafka")["published"] == 0
    after = latest()
    assert {name: after[name] for name in LATEST} == {name: before[name] for name in LATEST}
    assert json.loads(after[images_record]) == json.loads(before[images_record])
    assert json.loads(after[published_state])["documents"] == json.loads(before[published_state])["documents"]


@pytest.mark.fault(
    "a DAG run whose catalog has a product without 'product_id' or 'id'",
    "update_catalog fails at once (one try) naming it; publish_to_kafka never runs, the topic stays empty",
)
def test_a_product_without_an_id_stops_the_run_before_kafka(stack, airflow_db, tmp_path, capfd):
    for i in range(3):
        write_image(tmp_path / "images" / f"PROD-{i}.jpg", seed=i)
    products = [{"product_id": "PROD-0"}, {"product_id": "PROD-1"}, {"name": "no id"}, {"product_id": "PROD-2"}]
    write_catalog(tmp_path / "products.json", products)
    bucket = f"noid-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    topic = make_kafka_topic(stack.kafka_bootstrap, f"noid-{uuid.uuid4().hex[:8]}")
    images, catalog = str(tmp_path / "images"), str(tmp_path / "products.json")
    conf = {"images_dir": images, "catalog_file": catalog, "bucket": bucket, "topic": topic}

    run = local_airflow.run_dag("publish_product_images", conf)
    output = capfd.readouterr()

    assert run.state == "failed"
    assert run.task_states["update_catalog"] == ["failed"] and run.tries["update_catalog"] == [1]
    assert run.task_states["publish_to_kafka"] == ["upstream_failed"]
    assert "has 1 products without 'product_id' or 'id' (at #3)" in output.out + output.err
    assert read_topic(stack.kafka_bootstrap, topic, timeout=10) == []
