#!/usr/bin/env python
"""The runbook's Troubleshooting list as one command: check each point, say which fails and how to fix it.

  1. AWS credentials are configured          4. the manifest is valid (every listed file present)
  2. the bucket is reachable and writable    5. the S3 URL mapping is valid (no failed images)
  3. product images are present              6. the catalog is updated with the S3 URLs

Exits 0 when every check passes, 1 otherwise. The write check puts and deletes one small object.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, where include/ is

from include.catalog_publisher import cli, defaults  # noqa: E402
from include.catalog_publisher.doctor import run_checks  # noqa: E402


def main() -> int:
    parser = cli.parser(__doc__)
    parser.add_argument("--images-dir", default=defaults.IMAGES_DIR, help=f"default {defaults.IMAGES_DIR}")
    parser.add_argument("--manifest-file", default=defaults.MANIFEST_FILE, help=f"default {defaults.MANIFEST_FILE}")
    parser.add_argument(
        "--s3-url-mapping-file", default=defaults.URL_MAPPING_FILE, help=f"default {defaults.URL_MAPPING_FILE}"
    )
    parser.add_argument(
        "--catalog-file",
        default=defaults.UPDATED_CATALOG_FILE,
        help=f"the updated catalog (default {defaults.UPDATED_CATALOG_FILE})",
    )
    parser.add_argument("--bucket-name", help="bucket to check (default: the one the mapping file names)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    args = parser.parse_args()
    failed = 0
    for check in run_checks(
        args.images_dir,
        args.manifest_file,
        args.s3_url_mapping_file,
        args.catalog_file,
        args.bucket_name,
        args.endpoint_url,
    ):
        print(check.line())
        failed += not check.ok
    print(
        "all six checks passed"
        if not failed
        else f"{failed} of 6 checks failed: fix the first one first, then run this again"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
