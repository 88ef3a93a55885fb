#!/usr/bin/env python
"""Runbook step 3: write a copy of the product catalog with each product's image_url set to its S3 URL.

Every other field of every product is kept as it is. The catalog may be a JSON array, an object
with a "products" array, or JSON Lines (.jsonl); the output has the same shape and is written
atomically. Products without an image and images without a product are counted and reported.
A catalog with products without an id is refused and nothing is written: Kafka keys each product by its
id, and the next step would stop at the first product without one, after those before it were sent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, where include/ is

from include.catalog_publisher import cli, defaults  # noqa: E402
from include.catalog_publisher.catalog import refuse_products_without_id, rewrite_catalog  # noqa: E402
from include.catalog_publisher.url_mapping import load_url_mapping  # noqa: E402


def main() -> int:
    parser = cli.parser(__doc__, environment=False)
    parser.add_argument(
        "--catalog-file", default=defaults.CATALOG_FILE, help=f"the product catalog (default {defaults.CATALOG_FILE})"
    )
    parser.add_argument(
        "--s3-url-mapping-file",
        default=defaults.URL_MAPPING_FILE,
        help=f"mapping from upload_to_s3.py (default {defaults.URL_MAPPING_FILE})",
    )
    parser.add_argument(
        "--output-file",
        default=defaults.UPDATED_CATALOG_FILE,
        help=f"updated catalog to write (default {defaults.UPDATED_CATALOG_FILE})",
    )
    args = parser.parse_args()
    summary = rewrite_checked(args.catalog_file, load_url_mapping(args.s3_url_mapping_file), Path(args.output_file))
    print(
        f"catalog {args.output_file}: {summary.products} products, {summary.updated} with S3 image_url, "
        f"{summary.products_without_image} without image, {summary.images_without_product} images without product"
    )
    return 0


def rewrite_checked(catalog_file: str, urls, output: Path):
    """rewrite_catalog into a hidden draft beside `output`, renamed over it only when every product has an id."""
    same = Path(catalog_file).resolve() == output.resolve()
    draft = output if same else output.with_name(f".{output.name}.draft")  # the same file: rewrite_catalog refuses it
    try:
        summary = rewrite_catalog(catalog_file, urls, draft)
        refuse_products_without_id(summary, catalog_file, f"{output} was not written")
        os.replace(draft, output)
    finally:
        if not same:
            draft.unlink(missing_ok=True)
    return summary


if __name__ == "__main__":
    cli.run(main)
