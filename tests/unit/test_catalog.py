"""Step 5: the catalog rewrite keeps every other field and writes atomically."""

from __future__ import annotations

import copy
import json

import pytest

from include.catalog_publisher.catalog import read_products, rewrite_catalog
from include.catalog_publisher.catalog_changes import catalog_messages
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.kafka_publish import message_value

PRODUCTS = [
    {
        "product_id": "PROD-1",
        "name": "Lamp é",
        "price": 12.5,
        "tags": ["a"],
        "attributes": {"nested": {"deep": [1, 2]}},
        "image_url": "data/images/PROD-1.jpg",
    },
    {"product_id": "PROD-2", "name": "Mug", "price": 3, "stock": 0, "active": False, "note": None},
    {"id": 3, "name": "Numeric id"},
    {"name": "No id at all"},
    {"product_id": "PROD-1", "name": "Duplicate"},
    {"product_id": "PROD-2", "name": "Duplicate without image"},
]
URLS = {
    "PROD-1": "https://b.s3.amazonaws.com/products/PROD-1.jpg",
    "3": "https://b.s3.amazonaws.com/products/3.png",
    "PROD-9": "https://x/PROD-9.jpg",
}


def expected_products():
    expected = copy.deepcopy(PRODUCTS)
    expected[0]["image_url"] = URLS["PROD-1"]
    expected[2]["image_url"] = URLS["3"]
    expected[4]["image_url"] = URLS["PROD-1"]
    return expected


def write(path, fmt):
    if fmt == "array":
        path.write_text(json.dumps(PRODUCTS, indent=2, ensure_ascii=False), encoding="utf-8")
    elif fmt == "object":
        path.write_text(
            json.dumps({"generated": "2025-01-01", "products": PRODUCTS}, ensure_ascii=False), encoding="utf-8"
        )
    else:
        path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PRODUCTS), encoding="utf-8")
    return path


@pytest.mark.fault(
    "a catalog with duplicate product ids, a product without id, products without image, images without product",
    "every product kept with its other fields; each case counted with examples in the step's summary",
)
@pytest.mark.parametrize(
    ("fmt", "suffix"), [("array", ".json"), ("object", ".json"), ("jsonl", ".jsonl"), ("jsonl", ".json")]
)
def test_each_format_keeps_every_other_field_and_its_shape(tmp_path, fmt, suffix):
    source = write(tmp_path / f"catalog{suffix}", fmt)
    output = tmp_path / f"out{suffix}"
    summary = rewrite_catalog(source, URLS, output)

    assert list(read_products(output)) == expected_products()
    if fmt == "object":
        assert json.loads(output.read_text())["generated"] == "2025-01-01"
    elif fmt == "array":
        assert json.loads(output.read_text()) == expected_products()
    assert summary.format == fmt
    assert (summary.products, summary.updated, summary.products_without_image) == (6, 3, 2)
    assert (summary.products_without_id, summary.duplicate_product_ids, summary.images_without_product) == (1, 2, 1)
    assert summary.examples["duplicate_product_ids"] == ["PROD-1", "PROD-2"]
    assert summary.examples["images_without_product"] == ["PROD-9"]


@pytest.mark.parametrize(
    ("fmt", "suffix"), [("array", ".json"), ("object", ".json"), ("jsonl", ".jsonl"), ("jsonl", ".json")]
)
def test_the_rewritten_catalogs_messages_are_its_products_encoded_once(tmp_path, fmt, suffix):
    """publish_to_kafka takes each message value from the rewritten catalog's line: it must be what message_value
    encodes for that product, whatever the product holds (separators, non-ASCII, line separators, huge numbers)."""
    odd = {"product_id": "ODD", "name": "a, b] [c\u2028d\n", "empty": [], "x": -0.0, "f": 1e300}
    source = tmp_path / f"catalog{suffix}"
    write(source, fmt)
    if fmt == "array":
        source.write_text(json.dumps([*PRODUCTS, odd], ensure_ascii=False), encoding="utf-8")
    elif fmt == "jsonl":
        odd |= {"big": 2**70, "huge": float("inf")}  # JSON Lines are read by json: it keeps these, json writes Infinity
        source.write_text(source.read_text(encoding="utf-8") + json.dumps(odd) + "\n", encoding="utf-8")
    output = tmp_path / f"out{suffix}"
    rewrite_catalog(source, URLS, output)

    pairs = list(catalog_messages(output))
    assert [product for product, _ in pairs] == list(read_products(output))
    assert [value for _, value in pairs] == [message_value(product) for product in read_products(output)]
    assert len(pairs) == len(PRODUCTS) + (fmt != "object")


def test_json_lines_of_one_product_in_a_json_file_are_one_product(tmp_path):
    """One line holding a product with an id is JSON Lines, not the object form (which needs a products array);
    the publish is told the format the rewrite wrote, so even a product holding a products list stays one."""
    source = tmp_path / "catalog.json"
    source.write_text(json.dumps({"product_id": "PROD-1", "name": "Lamp"}) + "\n", encoding="utf-8")
    output = tmp_path / "products_with_s3_urls.json"
    summary = rewrite_catalog(source, URLS, output)
    expected = [{"product_id": "PROD-1", "name": "Lamp", "image_url": URLS["PROD-1"]}]
    assert summary.format == "jsonl" and list(read_products(output)) == expected
    assert [product for product, _ in catalog_messages(output)] == list(read_products(output))

    bundle = {"product_id": "SET-1", "products": [{"product_id": "PROD-1"}, {"product_id": "PROD-2"}]}
    output.write_text(json.dumps(bundle) + "\n", encoding="utf-8")
    assert [product for product, _ in catalog_messages(output, "jsonl")] == [bundle]


@pytest.mark.fault(
    "the run's rewritten catalog cut short at a line's end, or holding a line that is not JSON",
    "the publish stops with one error naming the file and what to run again; nothing past the damage is sent",
)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'[\n  {"product_id": "A"},\n  {"product_id": "B"},\n', "ends before its array does"),
        (b'[\n  {"product_id": "A"},\n  {"product_id": \n]\n', "line 3 is not valid JSON"),
        (b'{"product_id": "A"}\n{"product_id": "B"}\n\xff\n', "line 3 is not valid JSON"),
    ],
)
def test_a_damaged_rewritten_catalog_stops_the_publish_with_one_error(tmp_path, content, message):
    catalog = tmp_path / "products_with_s3_urls.json"
    catalog.write_bytes(content)
    with pytest.raises(PublisherError, match=message):
        list(catalog_messages(catalog, "array" if content.startswith(b"[") else "jsonl"))


@pytest.mark.fault(
    "a catalog that is CSV, truncated JSON, a bad JSON Lines line, an object without products, or not UTF-8",
    "one error naming the file and what is wrong; the previous output untouched, no temporary file",
)
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name,price\nLamp,3\n", "is not JSON: expected a JSON array of products"),
        (b'[{"product_id": "A"}, {"product_id": ', "is not valid JSON"),
        (b'{"product_id": "A"}\n{"product_id": broken}\n', "line 2 is not valid JSON"),
        (b'{"items": []}', "without a 'products' array"),
        (b'[{"name": "caf\xe9"}]', "is not UTF-8 text"),
    ],
    ids=["csv", "truncated-array", "bad-jsonl-line", "object-without-products", "latin-1"],
)
def test_bad_catalogs_are_one_clear_error_and_leave_the_output_untouched(tmp_path, content, message):
    source = tmp_path / "catalog.json"
    source.write_bytes(content)
    output = tmp_path / "out.json"
    output.write_text("previous output\n")
    with pytest.raises(PublisherError, match=message) as caught:
        rewrite_catalog(source, URLS, output)
    assert str(source) in str(caught.value) and "\n" not in str(caught.value)
    assert output.read_text() == "previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catalog.json", "out.json"]  # no temporary file left behind


@pytest.mark.fault("the catalog file is missing", "one error naming the path and the flag")
def test_missing_catalog_names_the_flag(tmp_path):
    with pytest.raises(PublisherError, match="does not exist; pass --catalog-file"):
        rewrite_catalog(tmp_path / "none.json", URLS, tmp_path / "out.json")


def test_writing_over_the_catalog_itself_is_refused(tmp_path):
    source = write(tmp_path / "catalog.json", "array")
    with pytest.raises(PublisherError, match="is the catalog itself"):
        rewrite_catalog(source, URLS, source)
    assert json.loads(source.read_text()) == PRODUCTS
