"""Step 2: split the manifest into upload batches, leaving out what the bucket already holds.

Each batch becomes one mapped Airflow task, so the batch count must stay within Airflow's
`[core] max_map_length` (1024 by default) whatever the catalog size: when the requested limits
would make more batches, the limits grow until the plan fits.

Given the bucket's listing, images whose object has the same size and an ETag equal to the file's
MD5 are not batched at all: they are written straight to the `unchanged` results file as skipped,
keeping their URL for the mapping. A re-run with nothing new therefore plans no upload task. The
manifest (in object-key order) and the listing (S3 lists in key order) are read side by side in one
pass, so planning holds neither, whatever the bucket holds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from include.catalog_publisher import defaults
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import atomic_output
from include.catalog_publisher.manifest import encode_entry as _encode
from include.catalog_publisher.manifest import iter_images_in_key_order
from include.catalog_publisher.s3_store import image_key

log = logging.getLogger(__name__)

# Batches big enough that a task's start-up (a new process under any scheduler) stays a small share of its work,
# and small enough that one task's run (and its retry, which its journal shortens) stays short: about ten seconds
# at 100 MB/s. bench/scheduled_runs.py measures the batch sizes.
DEFAULT_BATCH_BYTES = 1024 * 1024 * 1024
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


def _boundaries(sizes: Iterable[int], max_images: int, max_bytes: int) -> list[tuple[int, int]]:
    """(image count, bytes) of each batch when closing a batch at either limit."""
    batches: list[tuple[int, int]] = []
    count = nbytes = 0
    for size in sizes:
        if count and (count >= max_images or nbytes + size > max_bytes):
            batches.append((count, nbytes))
            count = nbytes = 0
        count += 1
        nbytes += size
    if count:
        batches.append((count, nbytes))
    return batches


def _split(
    images: Iterator[dict[str, Any]],
    listing: Iterable[tuple[str, int, str]] | None,
    prefix: str,
    to_upload: IO[bytes],
    unchanged: IO[bytes] | None,
) -> tuple[array, int]:
    """One pass of the manifest (in key order) beside the bucket's listing (in key order too): images the bucket
    holds unchanged go to `unchanged` as skipped results, the others to `to_upload` as JSON lines. Holds one
    listed object at a time, whatever the bucket holds. Returns (the sizes of the images to upload, how many are
    unchanged)."""
    sizes, unchanged_count = array("q"), 0
    aside: dict[str, tuple[int, str]] = {}
    listed = _in_key_order(listing or (), aside)
    current = next(listed, None)
    for image in images:
        key = image_key(prefix, image)
        while current is not None and current[0] < key:
            current = next(listed, None)
        found = current[1:] if current is not None and current[0] == key else aside.pop(key, None)
        if unchanged is not None and unchanged_in_bucket(image, found):
            unchanged.write((b"\n" if unchanged_count == 0 else b",\n") + _encode(skipped_result(image, key)))
            unchanged_count += 1
        else:
            to_upload.write(_encode(image) + b"\n")
            sizes.append(int(image["file_size"]))
    return sizes, unchanged_count


def _in_key_order(
    listing: Iterable[tuple[str, int, str]], aside: dict[str, tuple[int, str]]
) -> Iterator[tuple[str, int, str]]:
    """The listed objects, their keys rising: one listed above its place (a store's quirk, a key the client
    normalised) would hold back the walk of every image below it, so it is kept in `aside` instead, where
    _split still finds it. One object ahead of the caller."""
    held = None
    for listed in listing:
        if held is not None and listed[0] < held[0]:
            if not aside:
                log.warning("the bucket listed %s out of key order; planning looks it up aside", held[0])
            aside[held[0]] = held[1:]
        elif held is not None:
            yield held
        held = listed
    if held is not None:
        yield held


def plan_batches(
    manifest_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    max_images: int = defaults.DEFAULT_BATCH_IMAGES,
    max_bytes: int = DEFAULT_BATCH_BYTES,
    max_batches: int = DEFAULT_MAX_BATCHES,
    *,
    listing: Iterable[tuple[str, int, str]] | None = None,
    prefix: str = "",
    unchanged_file: str | os.PathLike | None = None,
) -> list[Batch]:
    """Write one JSON file of image entries per batch under output_dir and return the batches.

    With `listing` ((key, size, ETag) of the bucket under the prefix, in key order) and `unchanged_file`, images
    the bucket holds unchanged are left out and written to unchanged_file as skipped results (their URL stays).
    Memory stays flat: the manifest and the listing are read side by side, once.
    """
    if max_images < 1 or max_bytes < 1 or max_batches < 1:
        raise PublisherError(
            f"batch limits must be positive (got {max_images} images, {max_bytes} bytes, {max_batches} batches)"
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile("w+b", dir=out) as to_upload, _results_file(unchanged_file) as unchanged:
        sizes, unchanged_count = _split(iter_images_in_key_order(manifest_file), listing, prefix, to_upload, unchanged)
        if not sizes and not unchanged_count:
            raise PublisherError(
                f"manifest {manifest_file} lists no images; rebuild it from a folder that holds images"
            )
        batches = _sized_batches(sizes, max_images, max_bytes, max_batches)
        to_upload.seek(0)
        return [_write_batch(out, index, to_upload, count, nbytes) for index, (count, nbytes) in enumerate(batches)]


def _sized_batches(sizes: array, max_images: int, max_bytes: int, max_batches: int) -> list[tuple[int, int]]:
    """The batches' (images, bytes): the limits double until the plan fits in max_batches mapped tasks."""
    batches = _boundaries(sizes, max_images, max_bytes)
    while len(batches) > max_batches:
        max_images, max_bytes = max_images * 2, max_bytes * 2
        batches = _boundaries(sizes, max_images, max_bytes)
    log.info("%d batches of at most %d images / %d bytes", len(batches), max_images, max_bytes)
    return batches


def _write_batch(out: Path, index: int, lines: IO[bytes], count: int, nbytes: int) -> Batch:
    """The next `count` JSON lines of `lines` as batch file number `index`."""
    path = out / f"batch-{index:05d}.json"
    with atomic_output(path, "wb") as f:
        f.write(b'{"batch": %d, "images": [' % index)
        f.write(b",".join(lines.readline().rstrip(b"\n") for _ in range(count)))
        f.write(b"]}")
    return Batch(index, str(path), count, nbytes)


@contextlib.contextmanager
def _results_file(path: str | os.PathLike | None) -> Iterator[IO[bytes] | None]:
    """A results file written atomically (`{"results": [...]}`); None when there is no path."""
    if path is None:
        yield None
        return
    with atomic_output(path, "wb") as out:
        out.write(b'{"results": [')
        yield out
        out.write(b"\n]}\n")


def read_batch(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)["images"]


def as_xcom(batches: list[Batch]) -> list[dict]:
    return [asdict(b) for b in batches]
