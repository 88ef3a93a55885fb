"""Step 2: batch planning stays within Airflow's mapped-task limit."""

from __future__ import annotations

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
    assert [img["product_id"] for b in batches for img in read_batch(b.path)] == [
        i["product_id"] for i in images
    ]  # every image once, in order


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
