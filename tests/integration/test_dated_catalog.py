"""Runs over date folders publish the catalog, not just their day: under dag.test(), each publisher run followed by
an indexer run, the index equals the catalog after every run, each product with its newest image uploaded so far
(uploaded_images.py keeps it), whichever day's run brings the change."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from devstack import local_airflow
from include.catalog_publisher import env_clients, uploaded_images
from tests.helpers import make_kafka_topic, s3_client, write_catalog, write_image


class Days:
    """A date-folder images tree, its catalog, a fresh bucket, topic and index; publish a day, then index it."""

    def __init__(self, stack, folder: Path) -> None:
        self.stack, self.folder = stack, folder
        self.bucket, self.index = f"dated-{uuid.uuid4().hex[:8]}", f"dated-{uuid.uuid4().hex[:8]}"
        s3_client(stack).create_bucket(Bucket=self.bucket)
        self.topic = make_kafka_topic(stack.kafka_bootstrap, f"dated-{uuid.uuid4().hex[:8]}")
        self.conf = {"images_dir": str(folder / "images"), "catalog_file": str(folder / "products.json")}
        self.conf |= {"bucket": self.bucket, "topic": self.topic}

    def image(self, day: str, pid: str, seed: int = 0) -> None:
        write_image(self.folder / "images" / day / f"{pid}.jpg", seed=seed)

    def catalog(self, products: dict[str, dict]) -> None:
        write_catalog(self.folder / "products.json", [{"product_id": pid, **p} for pid, p in products.items()])

    def publish(self, day: str, **conf) -> dict:
        """Publish `day`, then index the topic and verify the index against the run's catalog; the publish's result."""
        run = local_airflow.run_dag("publish_product_images", self.conf | {"day": day} | conf)
        assert run.succeeded, run.task_states
        catalog = run.result("update_catalog")["catalog"]
        indexed = local_airflow.run_dag(
            "index_product_catalog", {"topic": self.topic, "index": self.index, "catalog_file": catalog}
        )
        assert indexed.succeeded, indexed.task_states  # verify_index: the index holds this run's catalog
        return run.result("publish_to_kafka")

    def indexed(self) -> dict[str, dict]:
        es = env_clients.elasticsearch(self.stack.elasticsearch_url)
        try:
            es.indices.refresh(index=self.index)
            hits = es.search(index=self.index, size=100, query={"match_all": {}})["hits"]["hits"]
        finally:
            es.close()
        return {hit["_id"]: hit["_source"] for hit in hits}

    def key(self, document: dict) -> str:
        return document["image_url"].split(f"/{self.bucket}/", 1)[1]


def test_the_index_follows_the_catalog_whatever_day_brings_the_change(stack, airflow_db, tmp_path):
    days = Days(stack, tmp_path)
    days.image("2025-06-01", "EARLY")  # its product enters the catalog a day later
    days.image("2025-06-01", "EDITED")
    days.image("2025-06-01", "READDED")
    days.catalog({"EDITED": {"price": 10}, "READDED": {"name": "lamp"}})
    days.publish("2025-06-01")
    assert set(days.indexed()) == {"EDITED", "READDED"}

    # 06-02: EARLY enters the catalog (no image that day), EDITED's price changes, READDED goes; NEW has an image.
    days.image("2025-06-02", "NEW")
    days.catalog({"EARLY": {}, "EDITED": {"price": 12}, "NEW": {}})
    published = days.publish("2025-06-02")
    assert (published["published"], published["removed"]) == (3, 1)
    index = days.indexed()
    assert set(index) == {"EARLY", "EDITED", "NEW"}
    assert days.key(index["EARLY"]) == "products/2025-06-01/EARLY.jpg" and index["EARLY"]["image_date"] == "2025-06-01"
    assert index["EDITED"]["price"] == 12 and days.key(index["EDITED"]) == "products/2025-06-01/EDITED.jpg"

    # 06-03 has no folder at all: READDED comes back, with the image it had.
    days.catalog({"EARLY": {}, "EDITED": {"price": 12}, "NEW": {}, "READDED": {"name": "lamp"}})
    published = days.publish("2025-06-03")
    assert (published["published"], published["removed"], published["unchanged"]) == (1, 0, 3)
    index = days.indexed()
    assert days.key(index["READDED"]) == "products/2025-06-01/READDED.jpg" and index["READDED"]["name"] == "lamp"

    # A backfill of an older day, re-uploading it, after all of this: nothing goes back to an older image.
    days.image("2025-05-30", "EDITED", seed=7)
    days.image("2025-05-30", "EARLY", seed=7)
    published = days.publish("2025-05-30", force_reupload=True)
    assert (published["published"], published["removed"]) == (0, 0)
    after = days.indexed()
    assert after == index
    assert {pid: doc.get("image_date") for pid, doc in after.items()} == {
        "EARLY": "2025-06-01",
        "EDITED": "2025-06-01",
        "NEW": "2025-06-02",
        "READDED": "2025-06-01",
    }


@pytest.mark.fault(
    "the uploaded images record (data/uploaded-images-<bucket>.json) lost, corrupt, or kept for another prefix",
    "rebuilt from a listing of the bucket's date folders: the run publishes the same catalog, a product whose image "
    "was uploaded on an earlier day gets it",
)
@pytest.mark.parametrize("damage", ["lost", "corrupt", "another prefix"])
def test_a_damaged_uploaded_images_record_is_rebuilt_from_the_bucket(stack, airflow_db, tmp_path, damage):
    days = Days(stack, tmp_path)
    days.image("2025-06-01", "EARLY")
    days.image("2025-06-01", "KEPT")
    days.image("2025-06-02", "KEPT", seed=2)
    days.catalog({"KEPT": {}})
    days.publish("2025-06-01")
    days.publish("2025-06-02")
    record = Path(os.environ["CATALOG_PUBLISHER_HOME"]) / uploaded_images.state_name(days.bucket)
    kept = json.loads(record.read_text())
    assert kept["product_image_dates"] == {"EARLY": "2025-06-01", "KEPT": "2025-06-02"}
    if damage == "lost":
        record.unlink()
    elif damage == "corrupt":
        record.write_text(record.read_text()[:100])
    else:
        record.write_text(json.dumps({**kept, "prefix": "elsewhere"}))
    days.catalog({"KEPT": {}, "EARLY": {"name": "late"}})

    published = days.publish("2025-06-03")  # no folder that day: only the record, rebuilt, gives images

    assert (published["published"], published["unchanged"]) == (1, 1)
    index = days.indexed()
    assert days.key(index["EARLY"]) == "products/2025-06-01/EARLY.jpg" and index["EARLY"]["name"] == "late"
    assert days.key(index["KEPT"]) == "products/2025-06-02/KEPT.jpg"
    rebuilt = json.loads(record.read_text())
    assert rebuilt["product_image_dates"] == kept["product_image_dates"] and rebuilt["prefix"] == "products"


def test_a_product_gone_with_its_file_is_not_given_its_deleted_object_when_it_comes_back(
    stack, airflow_db, tmp_path, s3
):
    """A product that left the catalog and whose file left its day's folder loses that image from the record, so
    deleting the object (delete_removed_images) never leaves a URL to nothing behind for when it comes back."""
    days = Days(stack, tmp_path)
    days.image("2025-06-01", "GONE")
    days.image("2025-06-01", "STAYS")
    days.catalog({"GONE": {"name": "vase"}, "STAYS": {}})
    days.publish("2025-06-01", delete_removed_images=True)
    (tmp_path / "images" / "2025-06-01" / "GONE.jpg").unlink()
    days.catalog({"STAYS": {}})

    days.publish("2025-06-01", delete_removed_images=True)  # the tombstone; the object is marked
    days.publish("2025-06-01", delete_removed_images=True)  # the indexer has let go of it: deleted

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=days.bucket)["Contents"]]
    assert keys == ["products/2025-06-01/STAYS.jpg"]
    days.catalog({"STAYS": {}, "GONE": {"name": "vase"}})
    days.publish("2025-06-02")
    back = days.indexed()["GONE"]
    assert back["name"] == "vase" and "image_url" not in back and "image_date" not in back
