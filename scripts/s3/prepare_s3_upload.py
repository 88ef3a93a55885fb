#!/usr/bin/env python
"""Runbook step 1: scan a folder of product images and write the S3 upload manifest.

Files are typed by their content (JPEG, PNG, WebP, GIF, AVIF), not their extension; files that are
not images, hidden files and symlinks are listed under "skipped" with the reason. The product id is
the file name without its extension.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, where include/ is

from include.catalog_publisher import cli, defaults  # noqa: E402
from include.catalog_publisher.manifest import write_manifest  # noqa: E402


def main() -> int:
    parser = cli.parser(__doc__, environment=False)
    parser.add_argument(
        "--images-dir",
        default=defaults.IMAGES_DIR,
        help=f"folder of product images, searched recursively (default {defaults.IMAGES_DIR})",
    )
    parser.add_argument(
        "--output-file", default=defaults.MANIFEST_FILE, help=f"manifest to write (default {defaults.MANIFEST_FILE})"
    )
    args = parser.parse_args()
    summary = write_manifest(args.images_dir, args.output_file)
    print(
        f"manifest {summary.path}: {summary.total_images} images, {summary.total_size_bytes / 1e6:.1f} MB, "
        f"{summary.skipped_files} files skipped"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
