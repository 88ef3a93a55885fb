"""Sample data: real images of every format, a matching catalog with deliberate mismatches."""

from __future__ import annotations

import hashlib
import json

from PIL import Image

from devstack.sample_data import generate
from include.catalog_publisher.manifest import scan_images


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "images").iterdir())}


def test_sample_data_is_real_varied_deterministic_and_mismatched_on_purpose(tmp_path):
    made = generate(tmp_path / "a", count=120, min_kb=2, max_kb=8)
    generate(tmp_path / "b", count=120, min_kb=2, max_kb=8)

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (tmp_path / "a" / "products.json").read_bytes() == (tmp_path / "b" / "products.json").read_bytes()

    entries = [e for e in scan_images(tmp_path / "a" / "images") if "skipped" not in e]
    assert len(entries) == made.images
    assert {e["content_type"] for e in entries} == {"image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"}
    for entry in entries[:20]:
        with Image.open(entry["file_path"]) as image:
            image.verify()  # decodable, not just a signature

    products = json.loads((tmp_path / "a" / "products.json").read_text())
    assert len(products) == made.products == 120
    product_ids = {p["product_id"] for p in products}
    image_ids = {e["product_id"] for e in entries}
    assert len(product_ids - image_ids) == made.products_without_image > 0
    assert len(image_ids - product_ids) == made.images_without_product > 0
    assert len({frozenset(p) for p in products}) > 1  # products differ in which fields they carry
