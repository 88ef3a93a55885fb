"""The runbook's Troubleshooting list as checks (scripts/doctor.py): each says ok, or what fails and how to fix it.

1. AWS credentials are configured        4. the manifest is valid
2. the bucket is reachable and writable  5. the S3 URL mapping is valid
3. product images are present            6. the catalog is updated with the S3 URLs
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from include.catalog_publisher.errors import PublisherError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def _run(name: str, check: Callable[[], str]) -> Check:
    try:
        return Check(name, True, check())
    except PublisherError as exc:
        return Check(name, False, str(exc))


def check_credentials() -> str:
    import boto3

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise PublisherError(
            "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
            "or run on a role"
        )
    return f"found ({credentials.method})"


def check_bucket_writable(bucket: str | None, endpoint_url: str | None) -> str:
    import obstore
    from obstore.exceptions import BaseError

    from include.catalog_publisher import env_clients
    from include.catalog_publisher.s3_store import QUICK_RETRY, check_bucket, describe_error

    if not bucket:
        raise PublisherError("no bucket to check; pass --bucket-name (or keep the mapping file, which names it)")
    target, store = env_clients.s3_store(bucket, endpoint_url, retry=QUICK_RETRY)
    check_bucket(store, target)
    probe = f"_catalog_publisher_doctor/{os.getpid()}"
    try:
        obstore.put(store, probe, b"doctor write check")
        obstore.delete(store, probe)
    except BaseError as exc:
        raise PublisherError(f"{describe_error(exc, target)} (writing a probe object)") from None
    return f"{target.where} answered and accepted a write (probe object removed)"


def check_images(images_dir: str) -> str:
    """A folder's or a bucket location's first image (s3://bucket/prefix: through the AWS environment)."""
    from include.catalog_publisher import env_clients
    from include.catalog_publisher.bucket_images import in_bucket
    from include.catalog_publisher.manifest import scan_images

    skipped = 0
    entries = env_clients.bucket_reader(images_dir).scan() if in_bucket(images_dir) else scan_images(images_dir)
    for entry in entries:
        if "skipped" not in entry:
            return f"{images_dir} holds images (first: {entry['file_path']}, {entry['content_type']})"
        skipped += 1
    raise PublisherError(
        f"{images_dir} holds no image ({skipped} other files); put JPEG, PNG, WebP, GIF or AVIF files there"
    )


def check_manifest(manifest_file: str) -> str:
    from include.catalog_publisher.manifest import iter_manifest_images, read_manifest_header

    header = read_manifest_header(manifest_file)
    count = 0
    for count, image in enumerate(iter_manifest_images(manifest_file), 1):  # noqa: B007 - the count is the point
        missing = {"product_id", "file_path", "file_size", "content_type"} - image.keys()
        if missing:
            raise PublisherError(
                f"manifest {manifest_file} entry {count} lacks {', '.join(sorted(missing))}; "
                "regenerate it with prepare_s3_upload.py"
            )
        if not Path(image["file_path"]).is_file():
            raise PublisherError(
                f"manifest {manifest_file} lists {image['file_path']}, which is not there any more; "
                "regenerate the manifest"
            )
    if count != header["total_images"]:
        raise PublisherError(
            f"manifest {manifest_file} says {header['total_images']} images but lists {count}; "
            "regenerate it with prepare_s3_upload.py"
        )
    return f"{manifest_file}: {count} images, every file present"


def check_mapping(mapping_file: str) -> str:
    from include.catalog_publisher.files import read_json
    from include.catalog_publisher.url_mapping import load_url_mapping

    urls = load_url_mapping(mapping_file)
    mapping = read_json(mapping_file, "S3 URL mapping")
    present = (mapping.get("uploaded_images") or 0) + (mapping.get("skipped_images") or 0)
    if present != len(urls):
        raise PublisherError(
            f"mapping {mapping_file} says {present} images are in the bucket but maps {len(urls)} products; "
            "rerun upload_to_s3.py"
        )
    if mapping.get("failed_images"):
        reasons = "; ".join(f"{f['file_path']}: {f['reason']}" for f in mapping.get("failures", [])[:3])
        raise PublisherError(
            f"mapping {mapping_file} records {mapping['failed_images']} failed images ({reasons}); "
            "fix them and rerun upload_to_s3.py"
        )
    return f"{mapping_file}: {len(urls)} products mapped to S3 URLs, none failed"


def check_catalog(catalog_file: str, mapping_file: str) -> str:
    from include.catalog_publisher.catalog import product_id, read_products
    from include.catalog_publisher.url_mapping import load_url_mapping

    urls = load_url_mapping(mapping_file)
    products = stale = 0
    for product in read_products(catalog_file):
        products += 1
        pid = product_id(product)
        if pid in urls and product.get("image_url") != urls[pid]:
            stale += 1
    if stale:
        raise PublisherError(
            f"{stale} products in {catalog_file} lack their S3 URL from {mapping_file}; "
            "rerun update_catalog_with_s3_urls.py"
        )
    return f"{catalog_file}: {products} products, each mapped one carries its S3 URL"


def run_checks(
    images_dir: str,
    manifest_file: str,
    mapping_file: str,
    catalog_file: str,
    bucket: str | None,
    endpoint_url: str | None,
) -> Iterator[Check]:
    """The six checks in the runbook's order; a missing file fails its own check, not the others."""
    if not bucket and Path(mapping_file).is_file():
        from include.catalog_publisher.files import read_json

        try:
            bucket = read_json(mapping_file, "S3 URL mapping").get("bucket_name")
        except (PublisherError, AttributeError):
            bucket = None
    yield _run("1. AWS credentials", check_credentials)
    yield _run("2. bucket reachable and writable", lambda: check_bucket_writable(bucket, endpoint_url))
    yield _run("3. product images present", lambda: check_images(images_dir))
    yield _run("4. manifest valid", lambda: check_manifest(manifest_file))
    yield _run("5. S3 URL mapping valid", lambda: check_mapping(mapping_file))
    yield _run("6. catalog updated with S3 URLs", lambda: check_catalog(catalog_file, mapping_file))
