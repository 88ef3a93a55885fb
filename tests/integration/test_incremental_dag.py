"""Incremental publishing through the DAG: a second run with no changes uploads nothing and maps everything;
only changed products and tombstones are published, and the index converges to the catalog."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from devstack import local_airflow, sample_data
from include.catalog_publisher import env_clients
from tests.helpers import make_kafka_topic, read_topic, s3_client, write_catalog, write_image


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
    images = first.xcoms["build_manifest"][0]["images"]
    assert first.succeeded and first.result("merge_url_mapping")["uploaded_images"] == images

    second = local_airflow.run_dag("publish_product_images", conf)
    mapping = second.result("merge_url_mapping")
    assert second.succeeded
    assert (mapping["uploaded_images"], mapping["skipped_images"], mapping["failed_images"]) == (0, images, 0)
    assert (
        second.result("update_catalog")["updated"] == first.result("update_catalog")["updated"]
    )  # the mapping is complete

    formats = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".avif": "AVIF"}
    for path in sorted((tmp_path / "images").iterdir())[2:5]:  # three images change content, same name and format
        write_image(path, formats[path.suffix], seed=99, side=31)
    third = local_airflow.run_dag("publish_product_images", conf)
    assert (
        third.result("merge_url_mapping")["uploaded_images"],
        third.result("merge_url_mapping")["skipped_images"],
    ) == (3, images - 3)
    # Their products carry the new pictures' image_sha256: exactly those three are published again.
    assert (third.result("publish_to_kafka")["published"], third.result("publish_to_kafka")["removed"]) == (3, 0)

    forced = local_airflow.run_dag("publish_product_images", {**conf, "force_reupload": True})
    assert (
        forced.result("merge_url_mapping")["uploaded_images"],
        forced.result("merge_url_mapping")["skipped_images"],
    ) == (images, 0)


def test_the_index_converges_to_the_catalog_with_only_the_changes_published(stack, airflow_db, tmp_path):
    """A whole-catalog run publishes only changed products and a tombstone per removed product; the
    index then holds exactly the catalog's products. A re-run with no change publishes nothing."""
    sample_data.generate(tmp_path, count=12, min_kb=2, max_kb=6)
    catalog_file = tmp_path / "products.json"
    products = json.loads(catalog_file.read_text())
    topic, index = f"conv-{uuid.uuid4().hex[:8]}", f"conv-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=(bucket := f"conv-{uuid.uuid4().hex[:8]}"))
    conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(catalog_file), "bucket": bucket, "topic": topic}

    def publish_and_index(**params) -> dict:
        run = local_airflow.run_dag("publish_product_images", {**conf, **params})
        assert run.succeeded, run.task_states
        catalog = run.result("update_catalog")["catalog"]
        indexed = local_airflow.run_dag(
            "index_product_catalog", {"topic": topic, "index": index, "catalog_file": catalog}
        )
        assert indexed.succeeded, indexed.task_states
        return run.result("publish_to_kafka")

    def indexed_documents() -> dict:
        es = env_clients.elasticsearch(stack.elasticsearch_url)
        es.indices.refresh(index=index)
        hits = es.search(index=index, size=100, query={"match_all": {}})["hits"]["hits"]
        return {hit["_id"]: hit["_source"] for hit in hits}

    first = publish_and_index()
    assert (first["published"], first["removed"]) == (len(products), 0)
    removed, changed = products[-1]["product_id"], {**products[0], "name": "renamed"}
    write_catalog(catalog_file, [changed, *products[1:-1]])

    second = publish_and_index()
    assert (second["published"], second["removed"], second["unchanged"]) == (1, 1, len(products) - 2)
    documents = indexed_documents()
    assert sorted(documents) == sorted(p["product_id"] for p in products[:-1]) and removed not in documents
    assert documents[changed["product_id"]]["name"] == "renamed"

    third = publish_and_index()
    assert (third["published"], third["removed"], third["unchanged"]) == (0, 0, len(products) - 1)
    replay = publish_and_index(republish_all=True)
    assert (replay["published"], replay["removed"]) == (len(products) - 1, 0)
    assert sorted(indexed_documents()) == sorted(documents)


def test_a_manifest_built_in_shards_publishes_what_one_task_would(stack, airflow_db, tmp_path, monkeypatch):
    """PUBLISHER_MANIFEST_SHARDS=3: three build_manifest tasks share the images by product id, plan_batches merges
    their manifests; every image is uploaded once, a re-run finds all of them unchanged (each shard reused its
    own latest digests), and a changed image is the only upload of the next run."""
    monkeypatch.setenv("PUBLISHER_MANIFEST_SHARDS", "3")
    sample_data.generate(tmp_path, count=30, min_kb=2, max_kb=6)
    bucket = f"shard-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    conf = {
        "images_dir": str(tmp_path / "images"),
        "catalog_file": str(tmp_path / "products.json"),
        "bucket": bucket,
        "topic": make_kafka_topic(stack.kafka_bootstrap, f"shard-{uuid.uuid4().hex[:8]}"),
        "batch_size": 10,
    }

    first = local_airflow.run_dag("publish_product_images", conf)
    assert first.succeeded, first.task_states
    shards = first.xcoms["build_manifest"]
    assert [s["shard"] for s in shards] == ["shard 1 of 3", "shard 2 of 3", "shard 3 of 3"]
    assert first.labels["build_manifest"] == ["shard 1 of 3", "shard 2 of 3", "shard 3 of 3"]
    assert all(s["images"] for s in shards) and sum(s["images"] for s in shards) == 30
    assert (first.result("merge_url_mapping")["uploaded_images"], first.result("publish_to_kafka")["published"]) == (
        30,
        30,
    )
    keys = {o["Key"] for o in s3_client(stack).list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"products/{p.name}" for p in (tmp_path / "images").iterdir()}

    home = Path(os.environ["CATALOG_PUBLISHER_HOME"]) / "data"
    for n in (1, 2, 3):  # each shard's latest manifest: the next run's digests of its unchanged files
        part = json.loads((home / f"s3_upload_manifest.shard-{n}-of-3.json").read_text())
        assert part["total_images"] == shards[n - 1]["images"]

    second = local_airflow.run_dag("publish_product_images", conf)
    assert (second.result("merge_url_mapping")["uploaded_images"], second.result("publish_to_kafka")["published"]) == (
        0,
        0,
    )

    changed = sorted((tmp_path / "images").glob("*.jpg"))[0]
    write_image(changed, "JPEG", seed=77, side=29)
    third = local_airflow.run_dag("publish_product_images", conf)
    assert (third.result("merge_url_mapping")["uploaded_images"], third.result("publish_to_kafka")["published"]) == (
        1,
        1,
    )


@pytest.mark.fault(
    "an image rewritten in place with the same size and its old mtime put back (exiftool -P, touch -r, cp -p, "
    "rsync -t), or rewritten within a clock tick of the last scan",
    "the next run reads it again (its ctime changed; a racy entry is not trusted), uploads it and publishes its new "
    "image_sha256",
)
def test_a_same_size_rewrite_with_its_old_mtime_restored_is_uploaded_and_its_new_checksum_published(
    stack, airflow_db, tmp_path
):
    """An edit that keeps the size and puts the mtime back (exiftool -P, touch -r) left the last manifest's digest
    in place, which still matched the bucket's ETag: the new picture was skipped on every run. The ctime tells."""
    sample_data.generate(tmp_path, count=6, min_kb=2, max_kb=6)
    an_hour_ago = time.time_ns() - 3600 * 10**9  # written well before the first scan: no racy re-read of them
    for path in (tmp_path / "images").iterdir():
        os.utime(path, ns=(an_hour_ago, an_hour_ago))
    bucket = f"ctime-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    topic = make_kafka_topic(stack.kafka_bootstrap, f"ctime-{uuid.uuid4().hex[:8]}")
    conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(tmp_path / "products.json")}
    conf |= {"bucket": bucket, "topic": topic}
    first = local_airflow.run_dag("publish_product_images", conf)
    assert first.succeeded, first.task_states

    edited = sorted((tmp_path / "images").glob("*.jpg"))[0]
    data = bytearray(edited.read_bytes())
    data[-3] ^= 0xFF  # same size, same inode, another picture
    edited.write_bytes(data)
    os.utime(edited, ns=(an_hour_ago, an_hour_ago))

    second = local_airflow.run_dag("publish_product_images", conf)
    assert second.succeeded, second.task_states
    assert second.result("merge_url_mapping")["uploaded_images"] == 1
    assert second.result("publish_to_kafka")["published"] == 1
    live = dict(read_topic(stack.kafka_bootstrap, topic))[edited.stem]
    assert live["image_sha256"] == hashlib.sha256(bytes(data)).hexdigest()
