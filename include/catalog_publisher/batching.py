"""Step 2: split the manifest into upload batches.

Each batch becomes one mapped Airflow task, so the batch count must stay within Airflow's
`[core] max_map_length` (1024 by default) whatever the catalog size: when the requested limits
would make more batches, the limits grow until the plan fits.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from catalog_publisher.errors import PublisherError
from catalog_publisher.files import atomic_output
from catalog_publisher.manifest import iter_manifest_images
from catalog_publisher.s3_store import object_key

log = logging.getLogger(__name__)

DEFAULT_BATCH_IMAGES = 500
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


def _boundaries(manifest_file: str | os.PathLike, max_images: int, max_bytes: int) -> list[tuple[int, int]]:
    """(image count, bytes) of each batch when closing a batch at either limit."""
    sizes: list[tuple[int, int]] = []
    count = nbytes = 0
    for image in iter_manifest_images(manifest_file):
        size = int(image["file_size"])
        if count and (count >= max_images or nbytes + size > max_bytes):
            sizes.append((count, nbytes))
            count = nbytes = 0
        count += 1
        nbytes += size
    if count:
        sizes.append((count, nbytes))
    return sizes


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

    `existing` (key -> (size, ETag), from one listing of the bucket) is noted on each entry whose
    object is already there, as `s3_size` and `s3_etag`, for the upload step to decide on.
    """
    if max_images < 1 or max_bytes < 1 or max_batches < 1:
        raise PublisherError(f"batch limits must be positive (got {max_images} images, {max_bytes} bytes, {max_batches} batches)")
    sizes = _boundaries(manifest_file, max_images, max_bytes)
    while len(sizes) > max_batches:
        max_images, max_bytes = max_images * 2, max_bytes * 2
        sizes = _boundaries(manifest_file, max_images, max_bytes)
    if not sizes:
        raise PublisherError(f"manifest {manifest_file} lists no images; rebuild it from a folder that holds images")
    log.info("%d batches of at most %d images / %d bytes", len(sizes), max_images, max_bytes)

    out = Path(output_dir)
    batches: list[Batch] = []
    images = iter_manifest_images(manifest_file)
    for index, (count, nbytes) in enumerate(sizes):
        path = out / f"batch-{index:05d}.json"
        entries = [next(images) for _ in range(count)]
        for entry in entries:
            if existing and (found := existing.get(object_key(prefix, entry["file_name"]))):
                entry["s3_size"], entry["s3_etag"] = found
        with atomic_output(path) as f:
            json.dump({"batch": index, "images": entries}, f, ensure_ascii=False)
        batches.append(Batch(index, str(path), count, nbytes))
    return batches


def read_batch(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["images"]


def as_xcom(batches: list[Batch]) -> list[dict]:
    return [asdict(b) for b in batches]
