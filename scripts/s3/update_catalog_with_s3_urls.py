#!/usr/bin/env python
"""Runbook step 3: write a copy of the product catalog with each product's image_url set to its S3 URL.

Every other field of every product is kept as it is. The catalog may be a JSON array, an object
with a "products" array, or JSON Lines (.jsonl); the output has the same shape and is written
atomically. Products without an image and images without a product are counted and reported.
A catalog with products without an id is refused and nothing is written: Kafka keys each product by its
id, and the next step would stop at the first product without one, after those before it were sent.
With --dry-run the rewrite goes to a temporary file, removed after, and the counts are printed (products,
updated, without image, images without product); the output file is not written or replaced.
"""

from __future__ import annotations

import os
import sys
import tempfile
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
    cli.add_dry_run(parser, "rewrites the catalog into a temporary file, removed after, and leaves the output file")
    args = parser.parse_args()
    urls = load_url_mapping(args.s3_url_mapping_file)
    if args.dry_run:
        with tempfile.TemporaryDirectory(prefix="catalog-dry-run-") as scratch:
            summary = rewrite_checked(args.catalog_file, urls, Path(args.output_file), dry_run_dir=Path(scratch))
        print(f"dry run: catalog {args.output_file} would have {counts(summary)}; nothing was written")
        return 0
    summary = rewrite_checked(args.catalog_file, urls, Path(args.output_file))
    print(f"catalog {args.output_file}: {counts(summary)}")
    return 0


def counts(summary) -> str:
    return (
        f"{summary.products} products, {summary.updated} with S3 image_url, "
        f"{summary.products_without_image} without image, {summary.images_without_product} images without product"
    )


def rewrite_checked(catalog_file: str, urls, output: Path, dry_run_dir: Path | None = None):
    """rewrite_catalog into a hidden draft beside `output`, renamed over it only when every product has an id.

    With `dry_run_dir` the draft goes there instead and is never renamed: the same checks, and `output` untouched.
    """
    same = Path(catalog_file).resolve() == output.resolve()
    folder = dry_run_dir or output.parent
    draft = output if same else folder / f".{output.name}.draft"  # the same file: rewrite_catalog refuses it
    try:
        summary = rewrite_catalog(catalog_file, urls, draft)
        refuse_products_without_id(summary, catalog_file, f"{output} was not written")
        if dry_run_dir is None:
            os.replace(draft, output)
    finally:
        if not same:
            draft.unlink(missing_ok=True)
    return summary


if __name__ == "__main__":
    cli.run(main)
