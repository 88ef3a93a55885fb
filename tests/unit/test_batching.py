"""Step 2: batch planning stays within Airflow's mapped-task limit."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from include.catalog_publisher.batching import Batch, plan_batches, read_batch
from include.catalog_publisher.errors import PublisherError


def write_manifest(path, sizes):
    images = [
        {"product_id": f"P{i}", "file_path": f"P{i}.jpg", "file_size": size, "content_type": "image/jpeg"}
        for i, size in enumerate(sizes)
    ]
    path.write_text(json.dumps({"total_images": len(images), "images_dir": "x", "images": images}))
    return images


def test_batches_close_at_the_image_count(tmp_path):
    images = write_manifest(tmp_path / "m.json", [10] * 25)
    batches = plan_batches(tmp_path / "m.json", tmp_path / "b", max_images=10, max_bytes=10**9)
    assert [b.images for b in batches] == [10, 10, 5]
    planned = [img["product_id"] for b in batches for img in read_batch(b.path)]
    assert planned == sorted(i["product_id"] for i in images)  # every image once, in object-key order


def test_batches_close_at_the_byte_limit(tmp_path):
    write_manifest(tmp_path / "m.json", [40, 40, 40, 100, 5])
    batches = plan_batches(tmp_path / "m.json", tmp_path / "b", max_images=100, max_bytes=100)
    assert [(b.images, b.bytes) for b in batches] == [(2, 80), (1, 40), (1, 100), (1, 5)]


def test_an_image_larger_than_the_byte_limit_gets_a_batch_of_its_own(tmp_path):
    write_manifest(tmp_path / "m.json", [5, 500, 5])
    batches = plan_batches(tmp_path / "m.json", tmp_path / "b", max_images=10, max_bytes=100)
    assert [b.images for b in batches] == [1, 1, 1]


def test_the_batch_count_never_exceeds_the_mapped_task_limit(tmp_path):
    write_manifest(tmp_path / "m.json", [1] * 5000)
    batches = plan_batches(tmp_path / "m.json", tmp_path / "b", max_images=1, max_bytes=10**9, max_batches=64)
    assert len(batches) <= 64
    assert sum(b.images for b in batches) == 5000


def test_labels_name_the_batch(tmp_path):
    assert Batch(3, "p", 500, 12_345_678).label == "batch 3: 500 images, 12.3 MB"


@pytest.mark.parametrize("kwargs", [{"max_images": 0}, {"max_bytes": -1}, {"max_batches": 0}])
def test_limits_must_be_positive(tmp_path, kwargs):
    write_manifest(tmp_path / "m.json", [1])
    with pytest.raises(PublisherError, match="batch limits must be positive"):
        plan_batches(tmp_path / "m.json", tmp_path / "b", **kwargs)


def test_an_empty_manifest_is_refused(tmp_path):
    write_manifest(tmp_path / "m.json", [])
    with pytest.raises(PublisherError, match="lists no images"):
        plan_batches(tmp_path / "m.json", tmp_path / "b")


def test_the_manifest_and_the_sorted_listing_are_walked_side_by_side(tmp_path):
    """A runbook manifest in no particular order against a listing in key order (as S3 lists): images the bucket
    holds with the same size and MD5 go to the unchanged results, every other one is planned, once."""
    md5 = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    images = [
        {"product_id": pid, "file_path": f"{pid}.jpg", "file_size": 1, "content_type": "image/jpeg", "md5": md5}
        for pid in ["P9", "P1", "P5", "P3", "P7"]
    ]
    (tmp_path / "m.json").write_text(json.dumps({"total_images": 5, "images_dir": "x", "images": images}))
    etag = hashlib.md5(b"x").hexdigest()
    listing = [("p/P0.jpg", 1, etag), ("p/P1.jpg", 1, etag), ("p/P3.jpg", 2, etag), ("p/P4.jpg", 1, etag)]
    listing += [("p/P5.jpg", 1, "other"), ("p/P9.jpg", 1, f'"{etag}"'), ("p/Q.jpg", 1, etag)]

    batches = plan_batches(
        tmp_path / "m.json", tmp_path / "b", listing=iter(listing), prefix="p", unchanged_file=tmp_path / "u.json"
    )

    planned = [image["product_id"] for batch in batches for image in read_batch(batch.path)]
    assert planned == ["P3", "P5", "P7"]  # another size, another ETag, not in the bucket
    unchanged = json.loads((tmp_path / "u.json").read_text())["results"]
    assert [(r["product_id"], r["key"], r["status"]) for r in unchanged] == [
        ("P1", "p/P1.jpg", "skipped"),
        ("P9", "p/P9.jpg", "skipped"),
    ]


def test_an_object_listed_out_of_key_order_holds_back_nothing(tmp_path):
    """A store that lists one key above its place (a quirk, or a key its client normalised) must not make every
    image below that key look new: that object is looked up aside, the rest of the walk goes on."""
    md5 = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    etag = hashlib.md5(b"x").hexdigest()
    pids = ["A", "B", "C", "D", "E"]
    images = [
        {"product_id": p, "file_path": f"{p}.jpg", "file_size": 1, "content_type": "image/jpeg", "md5": md5}
        for p in pids
    ]
    (tmp_path / "m.json").write_text(json.dumps({"total_images": 5, "images_dir": "x", "images": images}))
    listing = [(f"p/{k}.jpg", 1, etag) for k in ["zzz", "A", "B", "D", "C", "E"]]  # zzz first, C after D

    batches = plan_batches(
        tmp_path / "m.json", tmp_path / "b", listing=iter(listing), prefix="p", unchanged_file=tmp_path / "u.json"
    )

    assert batches == []  # every image found unchanged
    assert [r["product_id"] for r in json.loads((tmp_path / "u.json").read_text())["results"]] == pids
