"""Deleting the objects of removed images (opt-in, guarded) and dry runs, through real dag.test() runs on the
embedded stack: what goes, what never goes, and a dry run that reports everything and changes nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from devstack import local_airflow, sample_data
from tests.helpers import read_messages, s3_client, write_catalog, write_image


def _keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture
def flat(stack, airflow_db, tmp_path):
    """Eight images and their catalog, a fresh bucket and a topic the first run creates; the conf."""
    sample_data.generate(tmp_path, count=8, min_kb=2, max_kb=6)
    bucket = f"rm-{uuid.uuid4().hex[:8]}"
    s3_client(stack).create_bucket(Bucket=bucket)
    return {
        "images_dir": str(tmp_path / "images"),
        "catalog_file": str(tmp_path / "products.json"),
        "bucket": bucket,
        "topic": f"rm-{uuid.uuid4().hex[:8]}",
    }


def _run(conf: dict, **params):
    return local_airflow.run_dag("publish_product_images", {**conf, **params})


def _index(conf: dict, run) -> None:
    """The indexer over what `run` published: its consumer group commits, so the index has applied it."""
    catalog = run.result("update_catalog")["catalog"]
    indexed = local_airflow.run_dag(
        "index_product_catalog", {"topic": conf["topic"], "index": f"{conf['topic']}-index", "catalog_file": catalog}
    )
    assert indexed.succeeded, indexed.task_states


@pytest.mark.fault(
    "images removed from the folder, with delete_removed_images on; the indexer stopped, then caught up",
    "their objects go on a later run that finds them still unreferenced once the indexer's group has committed past "
    "the messages that dropped them (never while the index may still serve their URLs, however many runs pass); "
    "other prefixes and deeper keys are never touched",
)
def test_objects_of_removed_images_are_deleted_only_when_asked_in_scope_and_one_run_late(flat, s3):
    bucket = flat["bucket"]
    assert _run(flat).succeeded
    s3.put_object(Bucket=bucket, Key="products/archive/PROD-OLD.jpg", Body=b"deeper: not this run's")
    s3.put_object(Bucket=bucket, Key="elsewhere/PROD-X.jpg", Body=b"another prefix")
    images = sorted(Path(flat["images_dir"]).iterdir())
    for gone in images[:2]:
        gone.unlink()
    before = _keys(s3, bucket)

    kept = _run(flat)  # off by default: removed images keep their objects
    assert kept.succeeded and kept.task_states["delete_removed_images"] == ["skipped"]
    marking = _run(flat, delete_removed_images=True)  # the first run that finds them: marked, not deleted
    assert marking.succeeded, marking.task_states
    assert (marking.result("delete_removed_images")["deleted"], marking.result("delete_removed_images")["pending"]) == (
        0,
        2,
    )
    assert _keys(s3, bucket) == before
    for _ in range(2):  # the indexer has not applied that publish: the index may still serve their URLs
        early = _run(flat, delete_removed_images=True)
        assert (early.result("delete_removed_images")["deleted"], early.result("delete_removed_images")["pending"]) == (
            0,
            2,
        )
        assert _keys(s3, bucket) == before
    _index(flat, early)

    deleting = _run(flat, delete_removed_images=True)

    assert deleting.succeeded, deleting.task_states
    removed = [f"products/{p.name}" for p in images[:2]]
    deleted = deleting.result("delete_removed_images")
    assert (deleted["deleted"], deleted["pending"]) == (2, 0)
    assert _keys(s3, bucket) == sorted(set(before) - set(removed))
    assert "products/archive/PROD-OLD.jpg" in _keys(s3, bucket) and "elsewhere/PROD-X.jpg" in _keys(s3, bucket)


def test_an_image_back_before_the_second_run_is_not_deleted(flat, s3):
    assert _run(flat).succeeded
    image = sorted(Path(flat["images_dir"]).iterdir())[0]
    saved = image.read_bytes()
    image.unlink()
    assert _run(flat, delete_removed_images=True).result("delete_removed_images")["pending"] == 1
    image.write_bytes(saved)  # back (or uploaded by a concurrent run meanwhile)

    again = _run(flat, delete_removed_images=True)

    assert again.result("delete_removed_images") == {"deleted": 0, "pending": 0, "examples": [], "dry_run": False}
    assert f"products/{image.name}" in _keys(s3, flat["bucket"])


def test_more_deletions_than_allowed_delete_nothing(flat, s3):
    assert _run(flat).succeeded
    for gone in sorted(Path(flat["images_dir"]).iterdir())[:3]:
        gone.unlink()
    marking = _run(flat, delete_removed_images=True)
    assert marking.result("delete_removed_images")["pending"] == 3
    _index(flat, marking)
    before = _keys(s3, flat["bucket"])

    run = _run(flat, delete_removed_images=True, max_deletions=2)

    assert run.task_states["delete_removed_images"] == ["failed"] and run.tries["delete_removed_images"] == [1]
    assert _keys(s3, flat["bucket"]) == before


def test_a_dated_run_deletes_only_within_its_own_days(stack, airflow_db, s3, tmp_path):
    for day, ids in {"2025-06-01": ["A1", "A2"], "2025-06-02": ["B1", "B2"]}.items():
        for i, pid in enumerate(ids):
            write_image(tmp_path / "images" / day / f"PROD-{pid}.jpg", seed=i)
    write_catalog(tmp_path / "products.json", [{"product_id": f"PROD-{p}"} for p in ("A1", "A2", "B1", "B2")])
    bucket = f"rm-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    conf = {"images_dir": str(tmp_path / "images"), "catalog_file": str(tmp_path / "products.json")}
    conf |= {"bucket": bucket, "topic": f"rm-{uuid.uuid4().hex[:8]}"}
    for day in ("2025-06-01", "2025-06-02"):
        assert _run(conf, day=day).succeeded
    (tmp_path / "images" / "2025-06-01" / "PROD-A2.jpg").unlink()
    (tmp_path / "images" / "2025-06-02" / "PROD-B2.jpg").unlink()
    write_catalog(tmp_path / "products.json", [{"product_id": f"PROD-{p}"} for p in ("A1", "A2", "B1")])  # B2 gone
    marking = _run(conf, day="2025-06-02", delete_removed_images=True)
    assert marking.result("delete_removed_images")["pending"] == 1
    _index(conf, marking)

    run = _run(conf, day="2025-06-02", delete_removed_images=True)

    assert run.succeeded, run.task_states
    assert _keys(s3, bucket) == [
        "products/2025-06-01/PROD-A1.jpg",
        "products/2025-06-01/PROD-A2.jpg",  # another day: not this run's to delete
        "products/2025-06-02/PROD-B1.jpg",
    ]


def test_a_dry_run_reports_uploads_deletions_and_publishes_and_changes_nothing(flat, s3, stack, project_home):
    assert _run(flat).succeeded
    folder, catalog_file = Path(flat["images_dir"]), Path(flat["catalog_file"])
    images = sorted(folder.iterdir())
    images[0].unlink()  # a removed image
    write_image(folder / "PROD-NEW.jpg", seed=42)  # a new image
    products = json.loads(catalog_file.read_text())
    write_catalog(catalog_file, [*products[1:-1], {"product_id": "PROD-NEW"}])  # one product gone, one new
    state = project_home / "data" / f"published-{flat['topic']}.json"
    latest = [project_home / "data" / n for n in ("s3_upload_manifest.json", "s3_url_mapping.json")]
    before = (_keys(s3, flat["bucket"]), len(read_messages(stack.kafka_bootstrap, flat["topic"])))
    files_before = [p.read_bytes() for p in (state, *latest)]

    dry = _run(flat, dry_run=True, delete_removed_images=True)

    assert dry.succeeded, dry.task_states
    assert dry.result("merge_url_mapping")["uploaded_images"] == 0
    mapping = json.loads(Path(dry.result("merge_url_mapping")["url_mapping"]).read_text())
    assert mapping["planned_images"] == 1 and "PROD-NEW" in mapping["product_to_s3_url"]
    published = dry.result("publish_to_kafka")
    assert published["dry_run"] and published["removed"] == 2 and published["published"] >= 1  # PROD-NEW at least
    assert dry.result("delete_removed_images") == {
        "deleted": 0,
        "pending": 1,  # a real run would mark it, and the one after would delete it
        "examples": [f"products/{images[0].name}"],
        "dry_run": True,
    }
    assert (_keys(s3, flat["bucket"]), len(read_messages(stack.kafka_bootstrap, flat["topic"]))) == before
    assert [p.read_bytes() for p in (state, *latest)] == files_before
