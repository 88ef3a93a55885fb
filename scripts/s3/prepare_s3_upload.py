#!/usr/bin/env python
"""Runbook step 1: scan a folder of product images (or an s3://bucket/prefix) and write the S3 upload manifest.

Files are typed by their content (JPEG, PNG, WebP, GIF, AVIF), not their extension; files that are
not images, hidden files and symlinks are listed under "skipped" with the reason. The product id is
the file name without its extension.
A bucket location is scanned from its listing, through the AWS environment (its objects read once each for their
type and checksums; those the manifest already at --output-file lists with the same size, ETag and last-modified
are not read again).
With --dry-run the folder is scanned the same way and the summary printed (images, bytes, skipped
files with an example), but no manifest is written.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, where include/ is

from include.catalog_publisher import cli, defaults, env_clients  # noqa: E402
from include.catalog_publisher.bucket_images import in_bucket  # noqa: E402
from include.catalog_publisher.manifest import (  # noqa: E402
    no_images_error,
    previous_entries,
    scan_images,
    write_manifest,
)

log = logging.getLogger(__name__)


def main() -> int:
    parser = cli.parser(__doc__)
    parser.add_argument(
        "--images-dir",
        default=defaults.IMAGES_DIR,
        help=f"folder of product images, searched recursively, or s3://bucket/prefix (default {defaults.IMAGES_DIR})",
    )
    parser.add_argument(
        "--output-file", default=defaults.MANIFEST_FILE, help=f"manifest to write (default {defaults.MANIFEST_FILE})"
    )
    cli.add_dry_run(parser, "scans and reads the images as a real run does, and writes no manifest")
    args = parser.parse_args()
    bucket = env_clients.bucket_reader(args.images_dir) if in_bucket(args.images_dir) else None
    images_dir = bucket.location.url if bucket else args.images_dir
    if args.dry_run:
        return dry_run(images_dir, args.output_file, bucket)
    known = previous_entries(args.output_file, images_dir) if bucket else None  # the last manifest of this location
    summary = write_manifest(images_dir, args.output_file, known=known, bucket=bucket)
    print(
        f"manifest {summary.path}: {summary.total_images} images, {summary.total_size_bytes / 1e6:.1f} MB, "
        f"{summary.skipped_files} files skipped"
    )
    return 0


def dry_run(images_dir: str, output_file: str, bucket=None) -> int:
    """The scan write_manifest makes, summed up and printed; nothing is written."""
    images = total_bytes = 0
    skipped: list[dict[str, str]] = []
    for entry in bucket.scan() if bucket else scan_images(images_dir):
        if "skipped" in entry:
            log.warning("skipped %s: %s", entry["file_path"], entry["skipped"])
            skipped.append({"file_path": entry["file_path"], "reason": entry["skipped"]})
        else:
            images += 1
            total_bytes += entry["file_size"]
    if images == 0:
        raise no_images_error(images_dir, None, skipped)  # the error a real run gives
    example = f" (e.g. {skipped[0]['file_path']}: {skipped[0]['reason']})" if skipped else ""
    size = f"{total_bytes} bytes, {total_bytes / 1e6:.1f} MB"
    print(
        f"dry run: manifest {output_file} would list {images} images ({size}), "
        f"{len(skipped)} files skipped{example}; nothing was written"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
