"""The uploaded images record's rules that need no service: which image a run takes, which it forgets."""

from __future__ import annotations

from include.catalog_publisher.uploaded_images import UploadedImages


def record() -> UploadedImages:
    images = UploadedImages("product-images", "products", "http://s3/product-images/products/")
    images.take(
        {
            "product_to_s3_url": {"P1": "http://s3/.../2025-06-02/P1.jpg", "P2": "http://s3/.../2025-06-02/P2.jpg"},
            "product_image_dates": {"P1": "2025-06-02", "P2": "2025-06-02"},
            "product_image_sha256": {"P1": "a" * 64},
        }
    )
    return images


def test_a_newer_or_same_day_image_is_taken_an_older_one_is_not():
    images = record()
    older = {"P1": "http://s3/.../2025-06-01/P1.jpg"}
    assert images.take({"product_to_s3_url": older, "product_image_dates": {"P1": "2025-06-01"}}) == 0
    same_day = {"P1": "http://s3/.../2025-06-02/P1.jpg"}  # the day's file replaced: a new checksum
    replaced = {"product_to_s3_url": same_day, "product_image_dates": {"P1": "2025-06-02"}}
    changed = images.take({**replaced, "product_image_sha256": {"P1": "b"}})
    assert changed == 1 and images.checksums["P1"] == "b"


def test_an_image_is_forgotten_only_for_a_product_gone_from_the_catalog_whose_file_left_its_day():
    images = record()
    gone = images.forget(["2025-06-02"], scanned={"P1"}, catalog_ids={"P1"}, scan_ns=100)
    assert gone == ["P2"] and set(images.urls) == {"P1"}
    assert images.forget(["2025-06-02"], scanned=set(), catalog_ids={"P1"}, scan_ns=200) == []  # P1 is in the catalog


def test_a_scan_older_than_one_already_taken_for_that_day_forgets_nothing_of_it():
    """Run A's scan of a day began before a file landed, run B's after; B's publish came first. A must not forget
    what B found: A's scan could not have seen it."""
    images = record()
    assert images.forget(["2025-06-02"], scanned={"P1", "P2"}, catalog_ids=set(), scan_ns=200) == []  # run B
    assert images.forget(["2025-06-02"], scanned=set(), catalog_ids=set(), scan_ns=100) == []  # run A, older scan
    assert set(images.urls) == {"P1", "P2"} and images.scans == {"2025-06-02": 200}
