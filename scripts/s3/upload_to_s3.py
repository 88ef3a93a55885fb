#!/usr/bin/env python
"""Runbook step 2: upload the images of a manifest to S3 and write the product -> S3 URL mapping.

The mapping goes beside the manifest as s3_url_mapping.json (or to --output-file). Uploads run in
batches with bounded concurrency, send a SHA-256 checksum the server verifies and retry throttling
and 5xx answers. Images already in the bucket with the same size and MD5 are skipped (one listing
of the prefix tells) but keep their URL in the mapping; --force-reupload sends everything. \
Exits 1 when any image failed, after writing the mapping with the failure count
and listing the failed images with their reasons.
Images a manifest lists from an s3://bucket/prefix are copied on the server (CopyObject; a multipart copy above
16 MB), through the same AWS environment: no image passes through this machine.
With --dry-run the bucket is checked and listed once, as a real run does, and the plan printed: how many
images (and bytes) would be uploaded, how many are unchanged and would be skipped, with example keys;
nothing is uploaded and no mapping is written.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, where include/ is

from include.catalog_publisher import cli, defaults, env_clients  # noqa: E402
from include.catalog_publisher.bucket_images import BucketLocation, BucketSource, in_bucket  # noqa: E402
from include.catalog_publisher.defaults import DEFAULT_BATCH_IMAGES, DEFAULT_UPLOAD_CONCURRENCY  # noqa: E402
from include.catalog_publisher.files import write_json  # noqa: E402
from include.catalog_publisher.manifest import read_manifest_header  # noqa: E402
from include.catalog_publisher.s3_store import SSE_ALGORITHMS, Encryption  # noqa: E402
from include.catalog_publisher.upload import plan_manifest_upload, upload_manifest  # noqa: E402
from include.catalog_publisher.url_mapping import build_url_mapping, iter_batch_results  # noqa: E402


def main() -> int:
    parser = cli.parser(__doc__)
    parser.add_argument(
        "--manifest-file",
        default=defaults.MANIFEST_FILE,
        help=f"manifest from prepare_s3_upload.py (default {defaults.MANIFEST_FILE})",
    )
    parser.add_argument("--bucket-name", required=True, help="the S3 bucket to upload to (it must exist)")
    parser.add_argument("--prefix", default="", help="key prefix: objects are {prefix}/{file name} (default: none)")
    parser.add_argument("--output-file", help="mapping to write (default: s3_url_mapping.json beside the manifest)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    parser.add_argument("--region", help="the bucket's region (default: AWS_DEFAULT_REGION or the profile's)")
    parser.add_argument("--public-base-url", help="CDN base: URLs become {public-base-url}/{key}")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_IMAGES,
        help=f"images per batch (default {DEFAULT_BATCH_IMAGES})",
    )
    parser.add_argument(
        "--force-reupload", action="store_true", help="upload every image, even those already in the bucket unchanged"
    )
    parser.add_argument(
        "--sse",
        choices=SSE_ALGORITHMS,
        help="server-side encryption for every object: AES256 (SSE-S3) or aws:kms (SSE-KMS) (default: the bucket's)",
    )
    parser.add_argument(
        "--sse-kms-key-id", help="KMS key id or ARN for --sse aws:kms (default: the account's aws/s3 key)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_UPLOAD_CONCURRENCY,
        help=f"uploads in flight (default {DEFAULT_UPLOAD_CONCURRENCY})",
    )
    cli.add_dry_run(parser, "checks the bucket and lists the prefix once (unless --force-reupload), uploads nothing")
    args = parser.parse_args()

    manifest = Path(args.manifest_file)
    output = Path(args.output_file) if args.output_file else manifest.parent / "s3_url_mapping.json"
    encryption = Encryption(args.sse, args.sse_kms_key_id)
    target, store = env_clients.s3_store(args.bucket_name, args.endpoint_url, args.region, encryption=encryption)
    if args.dry_run:
        return dry_run(store, target, manifest, output, args)
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=output.parent if output.parent.exists() else None) as work:
        results_files = upload_manifest(
            store,
            target,
            manifest,
            work,
            args.prefix,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            force=args.force_reupload,
            source=_bucket_source(manifest, args),
            encryption=encryption,
        )
        mapping = build_url_mapping(iter_batch_results(results_files), target, args.prefix, args.public_base_url)
    write_json(output, mapping)

    print(
        f"mapping {output}: {mapping['uploaded_images']} of {mapping['total_images']} images uploaded "
        f"to {target.where}, "
        f"{mapping['skipped_images']} unchanged (skipped), {mapping['failed_images']} failed"
    )
    for failure in mapping["failures"]:
        print(f"  failed {failure['file_path']}: {failure['reason']}", file=sys.stderr)
    return 1 if mapping["failed_images"] else 0


def _bucket_source(manifest: Path, args) -> BucketSource | None:
    """Where a manifest of a bucket's images copies them from (None for a folder's): the same environment's client."""
    images_dir = read_manifest_header(manifest)["images_dir"]
    if not in_bucket(images_dir):
        return None
    client = env_clients.s3_client(args.endpoint_url, args.region, connections=args.concurrency)
    return BucketSource(BucketLocation.parse(images_dir), copy_client=client)


def dry_run(store, target, manifest: Path, output: Path, args) -> int:
    """The listing and plan of a real run, printed; its plan files go to a temporary folder, removed after."""
    with tempfile.TemporaryDirectory(prefix="upload-dry-run-") as work:
        plan = plan_manifest_upload(
            store,
            target,
            manifest,
            work,
            args.prefix,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            force=args.force_reupload,
        )
    skipped = (
        f"{plan.unchanged} unchanged in the bucket would be skipped"
        if plan.listed
        else "none skipped (--force-reupload: the bucket was not listed)"
    )
    print(
        f"dry run: {plan.to_upload} of {plan.total_images} images ({plan.to_upload_bytes} bytes, "
        f"{plan.to_upload_bytes / 1e6:.1f} MB) would be uploaded to {target.where} in {plan.batches} batches, {skipped}"
    )
    for key in plan.upload_examples:
        print(f"  would upload {key}")
    for key in plan.unchanged_examples:
        print(f"  unchanged {key}")
    print(f"nothing was uploaded and {output} was not written")
    return 0


if __name__ == "__main__":
    cli.run(main)
