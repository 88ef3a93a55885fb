"""Step 4: merge upload results into the runbook's product -> S3 URL mapping.

URL rules (DESIGN.md): a configured public base URL (a CDN) wins; against a custom endpoint the
URL is the object's path-style address there; otherwise the runbook's
`https://{bucket}.s3.amazonaws.com/{key}`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from catalog_publisher.errors import PublisherError
from catalog_publisher.files import read_json
from catalog_publisher.s3_store import S3Target


def object_url(target: S3Target, key: str, public_base_url: str | None = None) -> str:
    path = quote(key, safe="/")
    if public_base_url:
        return f"{public_base_url.rstrip('/')}/{path}"
    if target.endpoint:
        return f"{target.endpoint.rstrip('/')}/{target.bucket}/{path}"
    return f"https://{target.bucket}.s3.amazonaws.com/{path}"


def build_url_mapping(results: Iterable[dict[str, Any]], target: S3Target, prefix: str, public_base_url: str | None = None) -> dict[str, Any]:
    """The mapping document: the runbook's keys, plus skipped images, bytes and each failure with its reason.

    `uploaded_images` counts what this run sent; images skipped as unchanged in the bucket are
    counted apart and, like the uploaded ones, carry their URL in `product_to_s3_url`.
    """
    urls: dict[str, str] = {}
    failures: list[dict[str, str]] = []
    total = uploaded_bytes = 0
    uploaded = skipped = 0
    for r in results:
        total += 1
        if r["status"] in ("uploaded", "skipped"):
            urls[r["product_id"]] = object_url(target, r["key"], public_base_url)
        if r["status"] == "uploaded":
            uploaded += 1
            uploaded_bytes += r["bytes"]
        elif r["status"] == "skipped":
            skipped += 1
        else:
            failures.append({"product_id": r["product_id"], "file_path": r["file_path"], "reason": r["error"]})
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        "bucket_name": target.bucket,
        "prefix": prefix,
        "total_images": total,
        "uploaded_images": uploaded,
        "failed_images": len(failures),
        "skipped_images": skipped,
        "uploaded_bytes": uploaded_bytes,
        "product_to_s3_url": urls,
        "failures": failures,
    }


def iter_batch_results(results_files: Iterable[str | os.PathLike]) -> Iterable[dict[str, Any]]:
    for path in results_files:
        yield from read_json(path, "upload results file")["results"]


def load_url_mapping(path: str | os.PathLike) -> dict[str, str]:
    """The product -> URL table of a mapping file, validated."""
    mapping = read_json(path, "S3 URL mapping")
    table = mapping.get("product_to_s3_url") if isinstance(mapping, dict) else None
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise PublisherError(f"S3 URL mapping {path} has no 'product_to_s3_url' object of product id -> URL; regenerate it with upload_to_s3.py")
    return table
