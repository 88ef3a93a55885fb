"""Step 4: the product -> S3 URL mapping in the runbook's format, with the URL rules of docs/design.md."""

from __future__ import annotations

import json

import pytest

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.s3_store import S3Target
from include.catalog_publisher.url_mapping import build_url_mapping, iter_batch_results, load_url_mapping, object_url

REFERENCE_KEYS = {
    "timestamp",
    "bucket_name",
    "prefix",
    "total_images",
    "uploaded_images",
    "failed_images",
    "product_to_s3_url",
}


def result(pid, status="uploaded", key=None, size=10):
    r = {
        "product_id": pid,
        "file_path": f"data/images/{pid}.jpg",
        "key": key or f"products/{pid}.jpg",
        "bytes": size,
        "status": status,
    }
    if status == "failed":
        r["error"] = "S3 error: boom"
    return r


@pytest.mark.parametrize(
    ("target", "cdn", "url"),
    [
        (S3Target("shop"), None, "https://shop.s3.amazonaws.com/products/PROD-1.jpg"),
        (S3Target("shop", "http://127.0.0.1:8333/"), None, "http://127.0.0.1:8333/shop/products/PROD-1.jpg"),
        (
            S3Target("shop", "http://127.0.0.1:8333"),
            "https://cdn.example.com/img/",
            "https://cdn.example.com/img/products/PROD-1.jpg",
        ),
    ],
    ids=["aws-default", "custom-endpoint-path-style", "cdn-overrides"],
)
def test_url_rules(target, cdn, url):
    assert object_url(target, "products/PROD-1.jpg", cdn) == url


def test_keys_are_percent_encoded_in_urls():
    assert (
        object_url(S3Target("shop"), "products/Summer Sale/été #1.jpg")
        == "https://shop.s3.amazonaws.com/products/Summer%20Sale/%C3%A9t%C3%A9%20%231.jpg"
    )


def test_mapping_has_the_reference_keys_counts_and_failures():
    mapping = build_url_mapping(
        [result("PROD-1", size=5), result("PROD-2", "failed"), result("PROD-3", size=7)], S3Target("shop"), "products"
    )
    assert mapping.keys() >= REFERENCE_KEYS
    assert (
        mapping["total_images"],
        mapping["uploaded_images"],
        mapping["failed_images"],
        mapping["uploaded_bytes"],
    ) == (3, 2, 1, 12)
    assert mapping["product_to_s3_url"] == {
        "PROD-1": "https://shop.s3.amazonaws.com/products/PROD-1.jpg",
        "PROD-3": "https://shop.s3.amazonaws.com/products/PROD-3.jpg",
    }
    assert mapping["failures"] == [
        {"product_id": "PROD-2", "file_path": "data/images/PROD-2.jpg", "reason": "S3 error: boom"}
    ]
    assert (mapping["bucket_name"], mapping["prefix"]) == ("shop", "products")


def test_batch_results_are_merged_in_batch_order(tmp_path):
    for i, pids in enumerate([["A", "B"], ["C"]]):
        (tmp_path / f"{i}.json").write_text(json.dumps({"results": [result(p) for p in pids]}))
    assert [r["product_id"] for r in iter_batch_results([tmp_path / "0.json", tmp_path / "1.json"])] == ["A", "B", "C"]


def test_a_mapping_without_the_url_table_is_refused(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"bucket_name": "x"}))
    with pytest.raises(PublisherError, match="has no 'product_to_s3_url' object"):
        load_url_mapping(tmp_path / "m.json")


def test_a_missing_mapping_names_the_step_that_makes_it(tmp_path):
    with pytest.raises(PublisherError, match="does not exist; create it with the previous step"):
        load_url_mapping(tmp_path / "nope.json")


def test_the_url_table_gives_back_every_url_and_counts_claims(tmp_path):
    from include.catalog_publisher.url_mapping import UrlTable

    urls = {
        "A": "https://b.s3.amazonaws.com/p/A.jpg",
        "B": "https://b.s3.amazonaws.com/p/B.png",
        "C": "https://cdn.example.com/C.jpg",
    }
    table = UrlTable(urls.items())
    assert dict(table) == urls and len(table) == 3 and "C" in table and "Z" not in table
    assert table.claim("A") == (urls["A"], False)
    assert table.claim("A") == (urls["A"], True)  # a second product with the same id
    assert table.claim("Z") == (None, False)
    assert sorted(table.unclaimed()) == ["B", "C"]
    assert table["A"] == urls["A"]  # claiming does not change what the table answers

    (tmp_path / "m.json").write_text(json.dumps({"product_to_s3_url": urls}))
    assert dict(load_url_mapping(tmp_path / "m.json")) == urls


def test_a_mapping_with_a_non_url_value_is_refused(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"product_to_s3_url": {"A": 3}}))
    with pytest.raises(PublisherError, match="product A maps to 3, not a URL"):
        load_url_mapping(tmp_path / "m.json")


def test_image_checksums_reach_the_dags_catalog_and_not_the_runbooks(tmp_path):
    from include.catalog_publisher.catalog import rewrite_catalog

    results = [{**result("A"), "sha256": "a" * 64}, {**result("B", key="products/B.jpg"), "sha256": "b" * 64}]
    mapping = build_url_mapping(results, S3Target("shop"), "products")
    assert mapping["product_image_sha256"] == {"A": "a" * 64, "B": "b" * 64}
    (tmp_path / "m.json").write_text(json.dumps(mapping))
    (tmp_path / "catalog.json").write_text(json.dumps([{"product_id": "A"}, {"product_id": "B"}]))

    table = load_url_mapping(tmp_path / "m.json", checksums=True)
    assert table.checksum("A") == "a" * 64 and table.claim("A")[0] == mapping["product_to_s3_url"]["A"]
    assert table.checksum("A") == "a" * 64  # a claim keeps it
    rewrite_catalog(tmp_path / "catalog.json", load_url_mapping(tmp_path / "m.json", checksums=True), tmp_path / "dag")
    rewrite_catalog(tmp_path / "catalog.json", load_url_mapping(tmp_path / "m.json"), tmp_path / "runbook")
    assert [p["image_sha256"] for p in json.loads((tmp_path / "dag").read_text())] == ["a" * 64, "b" * 64]
    assert all("image_sha256" not in p for p in json.loads((tmp_path / "runbook").read_text()))
