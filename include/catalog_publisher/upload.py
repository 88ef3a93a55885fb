"""Step 3: upload one batch of images to S3 (runbook: upload_to_s3.py; DAG: upload_batch).

Bounded concurrency, the Content-Type from the manifest, a SHA-256 checksum the server verifies,
throttling and 5xx retried with backoff by the store's retry policy. Every image ends with one
result: uploaded, or failed with its reason (images the bucket already holds unchanged never
reach this step: the planning step leaves them out). Uploaded images are journaled as they finish,
so a retried or restarted batch resumes instead of starting over.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore
from obstore.exceptions import BaseError

from include.catalog_publisher.batching import image_result
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import write_json
from include.catalog_publisher.manifest import open_inside
from include.catalog_publisher.progress import Progress
from include.catalog_publisher.s3_store import S3Target, check_bucket, describe_error, list_objects, object_key

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 32
# Files above this are streamed to S3 as multipart uploads instead of read into memory.
MULTIPART_THRESHOLD = 16 * 1024 * 1024


@dataclass
class BatchOutcome:
    uploaded: int
    failed: int
    resumed: int
    bytes: int
    retryable_failures: int


def _read_verified(images_dir: str, image: dict[str, Any]) -> tuple[bytes | Path, str | None]:
    """The file's bytes (or, when large, its path) and SHA-256, after checking it still matches the manifest.

    Size and modification time (as rsync and s5cmd do) tell a changed file without reading it twice;
    the bytes' integrity on the way is checked by the server against the SHA-256 the store sends.
    A manifest of ours without mtime_ns is checked by hashing; the runbook's own format cannot be.
    """
    fd = open_inside(Path(images_dir), image["relative_path"])
    try:
        stat = os.fstat(fd)
        if stat.st_size != int(image["file_size"]) or ("mtime_ns" in image and stat.st_mtime_ns != image["mtime_ns"]):
            raise ValueError("file changed since the manifest was built; rebuild the manifest")
        rehash = "mtime_ns" not in image and bool(image.get("sha256"))
        sha = hashlib.sha256() if rehash else None
        if stat.st_size > MULTIPART_THRESHOLD:
            payload: bytes | Path = Path(images_dir) / image["relative_path"]
            if sha:
                with os.fdopen(fd, "rb", closefd=False) as f:
                    while chunk := f.read(1024 * 1024):
                        sha.update(chunk)
        else:
            with os.fdopen(fd, "rb", closefd=False) as f:
                payload = f.read()
            if sha:
                sha.update(payload)
    finally:
        os.close(fd)
    if sha and sha.hexdigest() != image["sha256"]:
        raise ValueError("file changed since the manifest was built; rebuild the manifest")
    return payload, image.get("sha256") or (sha.hexdigest() if sha else None)


def _unsafe_file_name(name: str) -> bool:
    """A manifest's file name must be one path segment: the scan never writes others, a hand-edited manifest might."""
    return not name or name in (".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 for c in name)


async def _upload_one(store, target: S3Target, image: dict[str, Any], images_dir: str, prefix: str) -> dict[str, Any]:
    key = object_key(prefix, image["file_name"])
    result = image_result(image, key)
    if _unsafe_file_name(image["file_name"]):
        return {
            **result,
            "status": "failed",
            "error": f"unsafe file name {image['file_name']!r} in the manifest; rebuild it with prepare_s3_upload.py",
            "retryable": False,
        }
    try:
        large = int(image["file_size"]) > MULTIPART_THRESHOLD  # if it must be hashed, not on the event loop
        payload, result["sha256"] = await asyncio.to_thread(_read_verified, images_dir, image) if large else _read_verified(images_dir, image)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return {**result, "status": "failed", "error": f"cannot read {image['file_path']}: {reason}", "retryable": False}
    try:
        await obstore.put_async(store, key, payload, attributes={"Content-Type": image["content_type"]})
    except BaseError as exc:
        return {**result, "status": "failed", "error": describe_error(exc, target), "retryable": True}
    return {**result, "status": "uploaded"}


def _load_journal(journal: Path | None) -> dict[str, dict[str, Any]]:
    """Results already uploaded by an earlier attempt, by key (a torn last line is ignored)."""
    done: dict[str, dict[str, Any]] = {}
    if journal and journal.exists():
        with open(journal, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[entry["key"]] = entry
    return done


async def _upload_all(store, target, images, images_dir, prefix, concurrency, journal, progress) -> list[dict[str, Any]]:
    semaphore = asyncio.Semaphore(concurrency)
    journal_file = open(journal, "a", encoding="utf-8") if journal else None  # noqa: SIM115 - closed below

    async def run(image: dict[str, Any]) -> dict[str, Any]:
        async with semaphore:
            result = await _upload_one(store, target, image, images_dir, prefix)
        progress.advance(1, result["bytes"] if result["status"] == "uploaded" else 0)
        if journal_file and result["status"] == "uploaded":
            journal_file.write(json.dumps(result, ensure_ascii=False) + "\n")
            journal_file.flush()
        return result

    try:
        return await asyncio.gather(*(run(image) for image in images))
    finally:
        if journal_file:
            journal_file.close()


def upload_images(
    store,
    target: S3Target,
    images: Iterable[dict[str, Any]],
    images_dir: str,
    prefix: str,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    journal: str | os.PathLike | None = None,
    progress_every: float = 10.0,
) -> list[dict[str, Any]]:
    """Upload images (manifest entries) and return one result per image, in input order.

    Raises PublisherError before uploading anything when the bucket is missing, forbidden or
    unreachable. With a journal, images it records as uploaded with the same SHA-256 are not
    sent again (reported with `"resumed": true`).
    """
    if concurrency < 1:
        raise PublisherError(f"upload concurrency must be at least 1 (got {concurrency})")
    check_bucket(store, target)
    images = list(images)
    journal_path = Path(journal) if journal else None
    if journal_path:
        journal_path.parent.mkdir(parents=True, exist_ok=True)
    done = _load_journal(journal_path)
    results: dict[int, dict[str, Any]] = {}
    todo: list[tuple[int, dict[str, Any]]] = []
    for i, image in enumerate(images):
        previous = done.get(object_key(prefix, image["file_name"]))
        if previous and image.get("sha256") and previous.get("sha256") == image["sha256"]:
            results[i] = {**previous, "resumed": True}
        else:
            todo.append((i, image))
    if results:
        log.info("resuming: %d of %d images were uploaded by an earlier attempt", len(results), len(images))
    progress = Progress(log, "uploaded images", total=len(todo), interval=progress_every)
    fresh = asyncio.run(_upload_all(store, target, [img for _, img in todo], images_dir, prefix, concurrency, journal_path, progress))
    progress.finish()
    for (i, _), result in zip(todo, fresh, strict=True):
        results[i] = result
    ordered = [results[i] for i in range(len(images))]
    for r in ordered:
        if r["status"] == "failed":
            log.error("failed %s: %s", r["file_path"], r["error"])
    return ordered


def summarize(results: list[dict[str, Any]]) -> BatchOutcome:
    uploaded = [r for r in results if r["status"] == "uploaded"]
    failed = [r for r in results if r["status"] == "failed"]
    return BatchOutcome(
        uploaded=len(uploaded),
        failed=len(failed),
        resumed=sum(1 for r in uploaded if r.get("resumed")),
        bytes=sum(r["bytes"] for r in uploaded),
        retryable_failures=sum(1 for r in failed if r.get("retryable")),
    )


def upload_batch_file(
    store, target: S3Target, batch_file: str, images_dir: str, prefix: str, results_file: str, *, concurrency: int = DEFAULT_CONCURRENCY
) -> BatchOutcome:
    """Upload the images listed in batch_file; write their results to results_file (atomically)."""
    from include.catalog_publisher.batching import read_batch

    results = upload_images(store, target, read_batch(batch_file), images_dir, prefix, concurrency=concurrency, journal=results_file + ".journal.jsonl")
    write_json(results_file, {"batch_file": batch_file, "results": results})
    return summarize(results)


def upload_manifest(
    store,
    target: S3Target,
    manifest_file: str | os.PathLike,
    work_dir: str | os.PathLike,
    prefix: str,
    *,
    batch_size: int,
    concurrency: int = DEFAULT_CONCURRENCY,
    force: bool = False,
) -> list[str]:
    """Upload a whole manifest batch by batch in this process (the runbook's upload_to_s3.py).

    The same listing, plan_batches and upload_batch_file the DAG runs; returns the results files,
    in batch order, for build_url_mapping. Unchanged objects are skipped unless `force`.
    """
    from include.catalog_publisher.batching import DEFAULT_BATCH_BYTES, plan_batches, write_unchanged
    from include.catalog_publisher.manifest import read_manifest_header

    images_dir = read_manifest_header(manifest_file)["images_dir"]
    work = Path(work_dir)
    results_files = []
    check_bucket(store, target)
    if not force:
        existing = list_objects(store, target, prefix)
        results_files.append(str(work / "unchanged.json"))
        write_unchanged(manifest_file, existing, prefix, results_files[0])
    for batch in plan_batches(manifest_file, work / "batches", batch_size, DEFAULT_BATCH_BYTES, existing=None if force else existing, prefix=prefix):
        results_file = str(work / "results" / f"batch-{batch.batch:05d}.json")
        outcome = upload_batch_file(store, target, batch.path, images_dir, prefix, results_file, concurrency=concurrency)
        log.info("%s: %d uploaded, %d failed", batch.label, outcome.uploaded, outcome.failed)
        results_files.append(results_file)
    return results_files
