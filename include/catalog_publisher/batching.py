"""Step 2: split the manifest into upload batches, leaving out what the bucket already holds.

Each batch becomes one mapped Airflow task, so the batch count must stay within Airflow's
`[core] max_map_length` (1024 by default) whatever the catalog size: when the requested limits
would make more batches, the limits grow until the plan fits.

Given one listing of the bucket (`existing`), images whose object has the same size and an ETag
equal to the file's MD5 are not batched at all: they are written straight to the `unchanged`
results file as skipped, keeping their URL for the mapping. A re-run with nothing new therefore
plans no upload task.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from include.catalog_publisher import defaults
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import atomic_output
from include.catalog_publisher.manifest import iter_manifest_images
from include.catalog_publisher.s3_store import image_key

log = logging.getLogger(__name__)

# 2000 images of the usual 20-200 KB keep a batch near 250 MB and a task busy for seconds, so
# per-task start-up (seconds on a distributed executor) stays a small share of the work.
DEFAULT_BATCH_IMAGES = defaults.DEFAULT_BATCH_IMAGES
DEFAULT_BATCH_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_BATCHES = 1024  # Airflow's default [core] max_map_length


@dataclass
class Batch:
    """What XCom carries for one batch: where its image list is and how big it is."""

    batch: int
    path: str
    images: int
    bytes: int

    @property
    def label(self) -> str:
        return f"batch {self.batch}: {self.images} images, {self.bytes / 1e6:.1f} MB"


def unchanged_in_bucket(image: dict[str, Any], found: tuple[int, str] | None) -> bool:
    """True when the listed object (size, ETag) has the file's size and its ETag is the file's MD5.

    Objects uploaded in parts (ETag "md5-of-parts-N") and manifests without an MD5 cannot be
    compared this way: those images are uploaded again.
    """
    if found is None or not image.get("md5") or found[0] != int(image["file_size"]):
        return False
    return base64.b64decode(image["md5"]).hex() == found[1].strip('"').lower()


def image_result(image: dict[str, Any], key: str, **outcome: Any) -> dict[str, Any]:
    """One image's upload result: what the mapping needs of the manifest entry, and the outcome."""
    return {
        "product_id": image["product_id"],
        "file_path": image["file_path"],
        "key": key,
        "bytes": int(image["file_size"]),
        "content_type": image["content_type"],
        "sha256": image.get("sha256"),
        **({"image_date": image["image_date"]} if image.get("image_date") else {}),
        **outcome,
    }


def skipped_result(image: dict[str, Any], key: str) -> dict[str, Any]:
    """The upload result of an image left out because the bucket holds it unchanged."""
    return image_result(image, key, status="skipped", reason="unchanged in the bucket (same size and MD5)")


def write_planned(batch_file: str | os.PathLike, prefix: str, results_file: str | os.PathLike) -> int:
    """A dry run's results of a batch: every image `planned` (it would be uploaded; nothing is sent)."""
    results = [
        image_result(image, image_key(prefix, image), status="planned", reason="dry run: would be uploaded")
        for image in read_batch(batch_file)
    ]
    with atomic_output(results_file) as out:
        json.dump({"batch_file": str(batch_file), "results": results}, out, ensure_ascii=False)
    return len(results)


def _to_upload(
    manifest_file: str | os.PathLike, existing: Mapping[str, tuple[int, str]] | None, prefix: str
) -> Iterator[dict[str, Any]]:
    for image in iter_manifest_images(manifest_file):
        if existing is None or not unchanged_in_bucket(image, existing.get(image_key(prefix, image))):
            yield image


def _boundaries(images: Iterator[dict[str, Any]], max_images: int, max_bytes: int) -> list[tuple[int, int]]:
    """(image count, bytes) of each batch when closing a batch at either limit."""
    sizes: list[tuple[int, int]] = []
    count = nbytes = 0
    for image in images:
        size = int(image["file_size"])
        if count and (count >= max_images or nbytes + size > max_bytes):
            sizes.append((count, nbytes))
            count = nbytes = 0
        count += 1
        nbytes += size
    if count:
        sizes.append((count, nbytes))
    return sizes


def write_unchanged(
    manifest_file: str | os.PathLike,
    existing: Mapping[str, tuple[int, str]],
    prefix: str,
    unchanged_file: str | os.PathLike,
) -> int:
    """Write the skipped results of every image the bucket holds unchanged; return how many."""
    count = 0
    with atomic_output(unchanged_file) as out:
        out.write('{"results": [')
        for image in iter_manifest_images(manifest_file):
            key = image_key(prefix, image)
            if unchanged_in_bucket(image, existing.get(key)):
                out.write(("\n" if count == 0 else ",\n") + json.dumps(skipped_result(image, key), ensure_ascii=False))
                count += 1
        out.write("\n]}\n")
    return count


def plan_batches(
    manifest_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_images: int = DEFAULT_BATCH_IMAGES,
    max_bytes: int = DEFAULT_BATCH_BYTES,
    max_batches: int = DEFAULT_MAX_BATCHES,
    *,
    existing: Mapping[str, tuple[int, str]] | None = None,
    prefix: str = "",
) -> list[Batch]:
    """Write one JSON file of image entries per batch under output_dir and return the batches.

    With `existing` (key -> (size, ETag) from one listing of the bucket), images the bucket holds
    unchanged are left out: see write_unchanged for their results.
    """
    if max_images < 1 or max_bytes < 1 or max_batches < 1:
        raise PublisherError(
            f"batch limits must be positive (got {max_images} images, {max_bytes} bytes, {max_batches} batches)"
        )
    sizes = _boundaries(_to_upload(manifest_file, existing, prefix), max_images, max_bytes)
    while len(sizes) > max_batches:
        max_images, max_bytes = max_images * 2, max_bytes * 2
        sizes = _boundaries(_to_upload(manifest_file, existing, prefix), max_images, max_bytes)
    if not sizes and next(iter_manifest_images(manifest_file), None) is None:
        raise PublisherError(f"manifest {manifest_file} lists no images; rebuild it from a folder that holds images")
    log.info("%d batches of at most %d images / %d bytes", len(sizes), max_images, max_bytes)

    out = Path(output_dir)
    batches: list[Batch] = []
    images = _to_upload(manifest_file, existing, prefix)
    for index, (count, nbytes) in enumerate(sizes):
        path = out / f"batch-{index:05d}.json"
        with atomic_output(path) as f:
            json.dump({"batch": index, "images": [next(images) for _ in range(count)]}, f, ensure_ascii=False)
        batches.append(Batch(index, str(path), count, nbytes))
    return batches


def read_batch(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["images"]


def as_xcom(batches: list[Batch]) -> list[dict]:
    return [asdict(b) for b in batches]
