"""Step 3: upload one batch of images to S3 (runbook: upload_to_s3.py; DAG: upload_batch).

Bounded concurrency and bounded bytes in flight (a streamed file's parts included), the Content-Type
from the manifest, a SHA-256 checksum the server verifies, throttling and 5xx retried with backoff by
the store's retry policy.
Files are opened once, checked (a regular file inside the images folder, no symlink, the size and
mtime of the manifest) and read from that same descriptor in worker threads, never on the event
loop: small files whole, large ones streamed in parts. Every image ends with one result: uploaded,
or failed with its reason and whether a later retry may help (s3_errors decides); images the bucket
already holds unchanged never reach this step (the planning step leaves them out). Uploaded images
are journaled as they finish with the ETag S3 gave them, so a retried or restarted batch resumes
instead of starting over; what the journal says is confirmed against the bucket (one HEAD per
journaled image: the ETag S3 gave it) before it is skipped.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ijson
import obstore
from botocore.exceptions import BotoCoreError, ClientError
from obstore.exceptions import BaseError

from include.catalog_publisher import bucket_images, defaults, settings
from include.catalog_publisher.batching import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_MAX_BATCHES,
    Batch,
    image_result,
    plan_batches,
    read_batch,
)
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import write_json
from include.catalog_publisher.manifest import open_inside, read_manifest_header
from include.catalog_publisher.progress import Progress
from include.catalog_publisher.s3_errors import CONFIG, classify, describe
from include.catalog_publisher.s3_store import (
    Encryption,
    S3Target,
    check_bucket,
    describe_error,
    image_key,
    iter_objects,
    scope_prefixes,
)

log = logging.getLogger(__name__)

# Files above this are streamed to S3 as multipart uploads; smaller ones go up in one PUT (their ETag
# is then their MD5, which is how the planning step recognises them unchanged next time).
MULTIPART_THRESHOLD = 16 * 1024 * 1024
PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4  # per streamed file, at most: fewer when the byte budget has no room for them (_stream_plan)
# The least budget that bounds every file: one sent in one PUT is held whole (up to MULTIPART_THRESHOLD),
# a streamed one holds at least one part being sent and the next one read.
MIN_BYTES_IN_FLIGHT = max(MULTIPART_THRESHOLD, 2 * PART_SIZE)
MIN_MB_IN_FLIGHT = MIN_BYTES_IN_FLIGHT // (1024 * 1024)
READ_THREADS = 4  # worker threads reading files (more only contend for the GIL on two cores)
# Small files are read GROUP_FILES at a time in one worker-thread call, up to GROUP_BYTES.
GROUP_FILES = 8
GROUP_BYTES = 8 * 1024 * 1024


def max_bytes_in_flight() -> int:
    """Bytes of file contents one batch holds at most: $PUBLISHER_UPLOAD_MAX_INFLIGHT_MB (its floor, MIN_MB_IN_FLIGHT,
    is what one file needs held at once; less could not bound anything)."""
    return int(settings.value(settings.UPLOAD_MAX_INFLIGHT_MB) * 1024 * 1024)


_ONE_FILE_NEEDS = (
    f"what one file needs held at once: a file of up to {MULTIPART_THRESHOLD // (1024 * 1024)} MB goes up in one PUT, "
    f"a larger one streams with one {PART_SIZE // (1024 * 1024)} MB part sent while the next is read"
)


def _stream_plan(budget: int, size: int) -> tuple[int, int]:
    """(parts in flight, bytes held at most) to stream a file of `size` bytes within a budget of at least
    MIN_BYTES_IN_FLIGHT. obstore reads the next part before it waits for a free place among the parts being
    sent, so a stream holds one part more than it sends at once, and never more than the whole file."""
    parts = max(1, min(PARTS_IN_FLIGHT, budget // PART_SIZE - 1))
    return parts, min((parts + 1) * PART_SIZE, size)


@dataclass
class BatchOutcome:
    uploaded: int
    failed: int
    resumed: int
    bytes: int
    retryable_failures: int


class _ByteBudget:
    """At most `limit` bytes held at once (an acquire larger than the whole budget would wait until it runs
    alone; the uploader never asks for one: its budget is at least MIN_BYTES_IN_FLIGHT and a stream asks for
    what _stream_plan fits in it). Waiters are served in order; everything runs on one event loop, so no lock."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    def _fits(self, nbytes: int) -> bool:
        return self.used == 0 or self.used + nbytes <= self.limit

    async def acquire(self, nbytes: int) -> None:
        if not self._waiting and self._fits(nbytes):
            self.used += nbytes
            return
        ready = asyncio.get_running_loop().create_future()
        self._waiting.append((nbytes, ready))
        await ready  # release() counts the bytes in for us

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        while self._waiting and self._fits(self._waiting[0][0]):
            wanted, ready = self._waiting.popleft()
            if not ready.cancelled():
                self.used += wanted
                ready.set_result(None)


class _LocalFileError(Exception):
    """The image file cannot be read as the manifest describes it: that image fails alone, for good."""


_CHANGED = "file changed since the manifest was built; rebuild the manifest"


def _open_checked(images_dir: str, image: dict[str, Any]) -> tuple[int, str | None]:
    """(descriptor, SHA-256) of the image, opened once and checked against the manifest.

    Size and modification time (as rsync and s5cmd do) tell a changed file without reading it twice;
    the bytes' integrity on the way is checked by the server against the SHA-256 the store sends.
    A manifest of ours without mtime_ns is checked by hashing, through the same descriptor; the
    runbook's own format cannot be. The caller closes the descriptor.
    """
    try:
        fd = open_inside(Path(images_dir), image["relative_path"])
    except (OSError, ValueError) as exc:
        raise _LocalFileError(exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) from None
    try:
        stat = os.fstat(fd)
        if stat.st_size != int(image["file_size"]) or ("mtime_ns" in image and stat.st_mtime_ns != image["mtime_ns"]):
            raise _LocalFileError(_CHANGED)
        if "mtime_ns" in image or not image.get("sha256"):
            return fd, image.get("sha256")
        sha, offset = hashlib.sha256(), 0
        while chunk := os.pread(fd, 1024 * 1024, offset):
            sha.update(chunk)
            offset += len(chunk)
        if sha.hexdigest() != image["sha256"]:
            raise _LocalFileError(_CHANGED)
        return fd, image["sha256"]
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise _LocalFileError(exc.strerror or str(exc)) from None
        raise


def _read_small(images_dir: str, image: dict[str, Any]) -> tuple[bytes, str | None]:
    """The whole file (at most MULTIPART_THRESHOLD bytes) and its SHA-256, read in a worker thread."""
    fd, sha256 = _open_checked(images_dir, image)
    try:
        size = int(image["file_size"])
        data = os.pread(fd, size, 0)
        if len(data) != size:
            raise _LocalFileError(_CHANGED)
        return data, sha256
    except OSError as exc:
        raise _LocalFileError(exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def _read_group(images_dir: str, images: list[dict[str, Any]]) -> list[tuple[bytes, str | None] | _LocalFileError]:
    """_read_small of several files in one worker-thread call: a hand-over between the event loop and a
    thread costs more CPU than reading a 100 KB file from the page cache, so small files go in groups."""
    read: list[tuple[bytes, str | None] | _LocalFileError] = []
    for image in images:
        try:
            read.append(_read_small(images_dir, image))
        except _LocalFileError as exc:
            read.append(exc)
    return read


async def _stream(loop, pool, fd: int, size: int) -> AsyncIterator[bytes]:
    """The checked descriptor's bytes in parts, each read in a worker thread (never the path again)."""
    offset = 0
    while offset < size:
        try:
            chunk = await loop.run_in_executor(pool, os.pread, fd, min(PART_SIZE, size - offset), offset)
        except OSError as exc:
            raise _LocalFileError(exc.strerror or str(exc)) from None
        if not chunk:
            raise _LocalFileError(_CHANGED)  # shorter than when it was checked
        offset += len(chunk)
        yield chunk


def _unsafe_file_name(name: str) -> bool:
    """A manifest's file name must be one path segment: the scan never writes others, a hand-edited manifest might."""
    return not name or name in (".", "..") or "/" in name or "\\" in name or any(ord(c) < 32 for c in name)


class _Uploader:
    """The shared state of one batch's uploads: the store, the limits, the read threads; the images' bucket, when
    they are in one (`source`), and the encryption its copies ask for."""

    def __init__(
        self,
        store,
        target: S3Target,
        images_dir: str,
        prefix: str,
        concurrency: int,
        budget: int,
        source: bucket_images.BucketSource | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        self.store, self.target, self.images_dir, self.prefix = store, target, images_dir, prefix
        self.source, self.encryption, self.concurrency = source, encryption, concurrency
        self.slots = asyncio.Semaphore(concurrency)  # requests in flight
        # Groups being read or sent: enough that the next files are read while the slots are busy.
        self.groups = asyncio.Semaphore(concurrency // GROUP_FILES + 2)
        self.budget = _ByteBudget(budget)
        self.pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="upload-read")
        # boto3 copies block a thread each while the server copies: as many threads as requests in flight.
        self.copies = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload-copy")
        self.reads = asyncio.Semaphore(concurrency)  # GETs of a relay in flight
        self.loop = asyncio.get_running_loop()
        # Set by a failure no other image can get past (missing bucket, refused credentials).
        self.fatal: str | None = None

    def failed(self, image: dict[str, Any], error: str, retryable: bool = False) -> dict[str, Any]:
        result = image_result(image, image_key(self.prefix, image))
        return {**result, "status": "failed", "error": error, "retryable": retryable}

    def _put_failed(self, image: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        fault = classify(exc)
        error = describe_error(exc, self.target)
        if fault.kind == CONFIG:
            self.fatal = self.fatal or error
        return self.failed(image, error, fault.retry_later)

    async def _put(self, image: dict[str, Any], payload, sha256: str | None, started=None, **options) -> dict[str, Any]:
        """One PUT in one of the slots; `started()` is called once it holds its slot."""
        key = image_key(self.prefix, image)
        async with self.slots:
            if started:
                started()
            if self.fatal:
                return self.failed(image, f"not attempted: {self.fatal}")
            try:
                attributes = {"Content-Type": image["content_type"]}
                put = await obstore.put_async(self.store, key, payload, attributes=attributes, **options)
            except _LocalFileError as exc:  # raised by the stream of a large file
                return self.failed(image, f"cannot read {image['file_path']}: {exc}")
            except (BaseError, OSError) as exc:  # obstore raises builtins (FileNotFoundError) for some answers
                return self._put_failed(image, exc)
        e_tag = (put.get("e_tag") or "").strip('"') or None
        return {**image_result(image, key), "sha256": sha256, "status": "uploaded", "e_tag": e_tag}

    async def upload_group(self, images: list[dict[str, Any]], done) -> None:
        """Read small files in one worker-thread call, then send each in its own request; `done(image, result)`.

        The group's read-ahead permit is given back as soon as its last file holds a request slot, not
        when its last request ends: a file S3 keeps throttling must not hold back the files after it.
        """
        sizes = [int(image["file_size"]) for image in images]
        await self.groups.acquire()
        waiting = {"files": len(images)}

        def started() -> None:
            waiting["files"] -= 1
            if waiting["files"] == 0:
                self.groups.release()

        try:
            await self.budget.acquire(sum(sizes))
            try:
                await self._read_and_send(images, sizes, started, done)
            finally:
                if sizes:  # cancelled part-way
                    self.budget.release(sum(sizes))
        finally:
            if waiting["files"] > 0:  # not every file got as far as a slot (fatal, cancelled)
                self.groups.release()

    async def _read_and_send(self, images: list[dict[str, Any]], sizes: list[int], started, done) -> None:
        """upload_group's work once its bytes are budgeted; each file's size leaves `sizes` when it is released."""
        if self.fatal:
            for image in images:
                done(image, self.failed(image, f"not attempted: {self.fatal}"))
            return
        read = await self.loop.run_in_executor(self.pool, _read_group, self.images_dir, images)

        async def send(image, size, got):
            try:
                if isinstance(got, _LocalFileError):
                    started()
                    done(image, self.failed(image, f"cannot read {image['file_path']}: {got}"))
                else:
                    done(image, await self._put(image, got[0], got[1], started, use_multipart=False))
            finally:
                self.budget.release(size)
                sizes.remove(size)

        await asyncio.gather(*map(send, images, list(sizes), read))

    async def upload_large(self, image: dict[str, Any], done) -> None:
        """Stream a file above the multipart threshold in parts from the descriptor that was checked, with as
        many parts in flight as the byte budget has room for."""
        in_flight, held = _stream_plan(self.budget.limit, int(image["file_size"]))
        await self.budget.acquire(held)
        try:
            if self.fatal:
                done(image, self.failed(image, f"not attempted: {self.fatal}"))
                return
            try:
                fd, sha256 = await self.loop.run_in_executor(self.pool, _open_checked, self.images_dir, image)
            except _LocalFileError as exc:
                done(image, self.failed(image, f"cannot read {image['file_path']}: {exc}"))
                return
            try:
                stream = _stream(self.loop, self.pool, fd, int(image["file_size"]))
                parts = {"chunk_size": PART_SIZE, "max_concurrency": in_flight}
                done(image, await self._put(image, stream, sha256, **parts))
            finally:
                os.close(fd)
        finally:
            self.budget.release(held)

    async def from_bucket(self, image: dict[str, Any], done) -> None:
        """Publish an image of a bucket: copied on the server when the destination's connection reaches it, else
        read through its own connection and sent on (relay). Whatever a client raises fails this image alone."""
        try:
            if self.source.copy_client is None:
                await self.relay(image, done)
            else:
                await self.copy(image, done)
        except bucket_images.SourceChanged as exc:
            done(image, self.failed(image, f"cannot publish {image['file_path']}: {exc}"))
        except (BotoCoreError, ClientError, BaseError, OSError) as exc:  # s3_errors classifies both clients' errors
            fault = classify(exc)
            if fault.kind == CONFIG:
                self.fatal = self.fatal or describe(exc, self._copy_where)
            done(image, self.failed(image, describe(exc, self._copy_where), fault.retry_later))

    @property
    def _copy_where(self) -> str:
        """Both ends of a copy, for messages: either may be the one S3 refused."""
        return f"{self.source.location.url} -> {self.target.where}"

    async def copy(self, image: dict[str, Any], done) -> None:
        """One server-side copy in one of the slots (bucket_images.copy_image, in a thread: boto3 blocks)."""
        key = image_key(self.prefix, image)
        async with self.slots:
            if self.fatal:
                done(image, self.failed(image, f"not attempted: {self.fatal}"))
                return
            copy = (self.source, image, self.target.bucket, key, self.encryption, MULTIPART_THRESHOLD, PART_SIZE)
            e_tag = await self.loop.run_in_executor(self.copies, bucket_images.copy_image, *copy)
        done(image, {**image_result(image, key), "sha256": image.get("sha256"), "status": "uploaded", "e_tag": e_tag})

    async def relay(self, image: dict[str, Any], done) -> None:
        """Stream an image of a bucket another connection reaches through this worker: a GET of the version the
        scan read (If-Match its ETag), at most `concurrency` at once, sent on in parts as a file is, within the byte
        budget."""
        size = int(image["file_size"])
        in_flight, held = _stream_plan(self.budget.limit, size) if size > MULTIPART_THRESHOLD else (1, size)
        await self.budget.acquire(held)
        try:
            async with self.reads:
                if self.fatal:
                    done(image, self.failed(image, f"not attempted: {self.fatal}"))
                    return
                done(image, await self._relay(image, size, in_flight))
        finally:
            self.budget.release(held)

    async def _relay(self, image: dict[str, Any], size: int, in_flight: int) -> dict[str, Any]:
        options = {"if_match": f'"{image["e_tag"]}"'} if image.get("e_tag") else {}
        try:
            got = await obstore.get_async(self.source.store, self.source.source_key(image), options=options)
            if size > MULTIPART_THRESHOLD:
                parts = {"chunk_size": PART_SIZE, "max_concurrency": in_flight}
                return await self._put(image, got.stream(min_chunk_size=PART_SIZE), image.get("sha256"), **parts)
            data = bytes(await got.bytes_async())
        except (BaseError, OSError) as exc:
            if classify(exc).status == 412:
                raise bucket_images.SourceChanged(bucket_images.CHANGED) from None
            raise
        if image.get("sha256") and hashlib.sha256(data).hexdigest() != image["sha256"]:
            raise bucket_images.SourceChanged(bucket_images.CHANGED)
        return await self._put(image, data, image.get("sha256"), use_multipart=False)

    async def confirm(self, key: str, previous: dict[str, Any]) -> bool:
        """True when the bucket holds the object an earlier attempt journaled: the ETag S3 gave it then."""
        async with self.slots:
            try:
                meta = await obstore.head_async(self.store, key)
            except (BaseError, OSError):  # gone, or S3 cannot say: upload it again
                return False
        if previous.get("e_tag"):  # what S3 answered to our PUT: the same object, or another
            return (meta["e_tag"] or "").strip('"') == previous["e_tag"]
        return meta["size"] == int(previous["bytes"])  # a journal line from before ETags were journaled


async def _each(work, items: list, at_once: int, answer=lambda _: None) -> None:
    """`answer(await work(item))` for every item, `at_once` at a time: a few workers taking the next item, not a task
    per item waiting for a slot (a batch of 25,000 copies would hold 25,000 of them, tens of megabytes)."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            answer(await work(item))

    await asyncio.gather(*(worker() for _ in range(min(at_once, len(items)))))


def _groups(images: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """Consecutive small images in groups of at most GROUP_FILES files and GROUP_BYTES (and the budget)."""
    groups: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    nbytes = 0
    limit = min(GROUP_BYTES, max_bytes)
    for image in images:
        size = int(image["file_size"])
        if current and (len(current) >= GROUP_FILES or nbytes + size > limit):
            groups.append(current)
            current, nbytes = [], 0
        current.append(image)
        nbytes += size
    if current:
        groups.append(current)
    return groups


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


class _Results:
    """One result per image, kept by input position, counted in the progress and journaled as it comes."""

    def __init__(self, images: list[tuple[dict[str, Any], Any]], progress: Progress, journal_file) -> None:
        self.position = {id(image): i for i, (image, _) in enumerate(images)}
        self.count = len(images)
        self.by_position: dict[int, dict[str, Any]] = {}
        self.progress, self.journal_file = progress, journal_file

    def done(self, image: dict[str, Any], result: dict[str, Any]) -> None:
        """Record an image's result; an image uploaded by this attempt also goes to the journal."""
        self.by_position[self.position[id(image)]] = result
        uploaded_now = result["status"] == "uploaded" and not result.get("resumed")
        self.progress.advance(1, result["bytes"] if uploaded_now else 0)
        if self.journal_file and uploaded_now:
            self.journal_file.write(json.dumps(result, ensure_ascii=False) + "\n")
            self.journal_file.flush()

    def in_order(self) -> list[dict[str, Any]]:
        """The results in the order of the images given."""
        return [self.by_position[i] for i in range(self.count)]


async def _upload_all(
    store, target, images, images_dir, prefix, concurrency, budget, journal, progress, source, encryption
) -> list[dict]:
    """Confirm the journaled images (`images` items are (image, previous journal entry or None)), then
    upload the rest; one result per image, in order."""
    uploader = _Uploader(store, target, images_dir, prefix, concurrency, budget, source, encryption)
    journal_file = open(journal, "a", encoding="utf-8") if journal else None  # noqa: SIM115 - closed below
    results = _Results(images, progress, journal_file)
    try:
        todo = await _not_confirmed(uploader, images, results)
        await _upload_todo(uploader, todo, results, budget)
    finally:
        if journal_file:
            journal_file.close()
        uploader.pool.shutdown(wait=False)
        uploader.copies.shutdown(wait=False)
    if uploader.fatal:
        raise PublisherError(uploader.fatal)
    return results.in_order()


async def _not_confirmed(uploader: _Uploader, images: list[tuple[dict, Any]], results: _Results) -> list[dict]:
    """The images to upload, in input order: those not journaled, and those the bucket does not hold as journaled."""

    async def confirm(image: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any] | None:
        if await uploader.confirm(previous["key"], previous):
            results.done(image, {**previous, "resumed": True})
            return None
        log.warning("%s was journaled as uploaded but the bucket does not hold it; uploading it again", previous["key"])
        return image

    journaled = [(image, previous) for image, previous in images if previous is not None]
    again: list[dict[str, Any]] = []
    await _each(lambda item: confirm(*item), journaled, uploader.concurrency, again.append)
    todo = [image for image, previous in images if previous is None]
    todo += [image for image in again if image is not None]
    todo.sort(key=lambda image: results.position[id(image)])
    return todo


async def _upload_todo(uploader: _Uploader, todo: list[dict[str, Any]], results: _Results, budget: int) -> None:
    """Fail the images whose file name is unsafe, then upload the rest: small ones in groups, large ones streamed
    (images of a bucket: each copied or relayed)."""
    unsafe = [image for image in todo if _unsafe_file_name(image["file_name"])]
    for image in unsafe:
        error = f"unsafe file name {image['file_name']!r} in the manifest; rebuild it with prepare_s3_upload.py"
        results.done(image, uploader.failed(image, error))
    todo = [image for image in todo if not _unsafe_file_name(image["file_name"])]
    if uploader.source is not None:
        await _each(lambda image: uploader.from_bucket(image, results.done), todo, uploader.concurrency)
        return
    small = [image for image in todo if int(image["file_size"]) <= MULTIPART_THRESHOLD]
    large = [image for image in todo if int(image["file_size"]) > MULTIPART_THRESHOLD]
    work = [uploader.upload_group(group, results.done) for group in _groups(small, budget)]
    work += [uploader.upload_large(image, results.done) for image in large]
    await asyncio.gather(*work)


def upload_images(
    store,
    target: S3Target,
    images: Iterable[dict[str, Any]],
    images_dir: str,
    prefix: str,
    *,
    concurrency: int = defaults.DEFAULT_UPLOAD_CONCURRENCY,
    journal: str | os.PathLike | None = None,
    progress_every: float = 10.0,
    max_bytes: int | None = None,
    source: bucket_images.BucketSource | None = None,
    encryption: Encryption | None = None,
) -> list[dict[str, Any]]:
    """Upload images (manifest entries) and return one result per image, in input order. Images of a bucket
    (images_dir s3://...) come from `source`; their copies ask for `encryption` (a store's uploads carry its own).
    Raises PublisherError before uploading anything when the bucket is missing, forbidden or
    unreachable (ServiceUnavailableError when S3 cannot serve now), and after the batch when a
    failure no image can get past came up mid-way (the bucket deleted, the credentials refused).
    With a journal, images it records as uploaded with the same SHA-256, and that the bucket still
    holds with the journaled size and ETag, are not sent again (reported with `"resumed": true`).
    At most `max_bytes` of file contents (default: max_bytes_in_flight(); at least MIN_BYTES_IN_FLIGHT) are held.
    """
    budget = _upload_limits(concurrency, max_bytes)
    if bucket_images.in_bucket(images_dir) and source is None:
        raise PublisherError(f"the images are in {images_dir}: reading them needs its bucket's client (source)")
    check_bucket(store, target)
    images, journal_path = list(images), Path(journal) if journal else None
    if journal_path:
        journal_path.parent.mkdir(parents=True, exist_ok=True)
    planned = _pair_with_journal(images, _load_journal(journal_path), prefix)
    if journaled := sum(1 for _, previous in planned if previous):
        message = "resuming: %d of %d images were uploaded by an earlier attempt; confirming them in the bucket"
        log.info(message, journaled, len(images))
    progress = Progress(log, "uploaded images", total=len(images), interval=progress_every)
    limits = (concurrency, budget, journal_path, progress, source, encryption)
    ordered = asyncio.run(_upload_all(store, target, planned, images_dir, prefix, *limits))
    progress.finish()
    _log_outcome(ordered, journaled)
    return ordered


def _upload_limits(concurrency: int, max_bytes: int | None) -> int:
    """The byte budget of a batch (_byte_budget) once the concurrency is checked: what an upload refuses to run with."""
    if concurrency < 1:
        raise PublisherError(f"upload concurrency must be at least 1 (got {concurrency})")
    return _byte_budget(max_bytes)


def _byte_budget(max_bytes: int | None) -> int:
    """`max_bytes`, else the setting (max_bytes_in_flight()); never below what one file needs held at once."""
    budget = max_bytes_in_flight() if max_bytes is None else max_bytes
    if budget < MIN_BYTES_IN_FLIGHT:
        raise PublisherError(f"a byte budget of {budget} is below {MIN_BYTES_IN_FLIGHT} bytes, {_ONE_FILE_NEEDS}")
    return budget


def _pair_with_journal(
    images: list[dict[str, Any]],
    done: dict[str, dict[str, Any]],
    prefix: str,
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each image with its journal entry if an earlier attempt uploaded the same bytes (size, SHA-256), else None."""
    planned = []
    for image in images:
        previous = done.get(image_key(prefix, image))
        same_bytes = previous and previous.get("bytes") == int(image["file_size"])
        same = same_bytes and image.get("sha256") and previous.get("sha256") == image["sha256"]
        planned.append((image, previous if same else None))
    return planned


def _log_outcome(ordered: list[dict[str, Any]], journaled: int) -> None:
    """Log how a resumed batch went, and each image that failed with its reason."""
    resumed = sum(1 for r in ordered if r.get("resumed"))
    if journaled:
        message = "resumed %d images the bucket holds; %d journaled images were uploaded again"
        log.info(message, resumed, journaled - resumed)
    for r in ordered:
        if r["status"] == "failed":
            log.error("failed %s: %s", r["file_path"], r["error"])


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
    store,
    target: S3Target,
    batch_file: str,
    images_dir: str,
    prefix: str,
    results_file: str,
    *,
    concurrency: int = defaults.DEFAULT_UPLOAD_CONCURRENCY,
    source: bucket_images.BucketSource | None = None,
    encryption: Encryption | None = None,
) -> BatchOutcome:
    """Upload the images listed in batch_file; write their results to results_file (atomically)."""
    results = upload_images(
        store,
        target,
        read_batch(batch_file),
        images_dir,
        prefix,
        concurrency=concurrency,
        journal=results_file + ".journal.jsonl",
        source=source,
        encryption=encryption,
    )
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
    concurrency: int = defaults.DEFAULT_UPLOAD_CONCURRENCY,
    force: bool = False,
    source: bucket_images.BucketSource | None = None,
    encryption: Encryption | None = None,
) -> list[str]:
    """Upload a whole manifest batch by batch in this process (the runbook's upload_to_s3.py).

    The same listing, plan_batches and upload_batch_file the DAG runs; returns the results files,
    in batch order, for build_url_mapping. Unchanged objects are skipped unless `force`.
    """
    images_dir = read_manifest_header(manifest_file)["images_dir"]
    work = Path(work_dir)
    unchanged_file, _, batches = plan_upload(store, target, manifest_file, work, prefix, batch_size, force)
    results_files = [unchanged_file] if unchanged_file else []
    for batch in batches:
        results_file = str(work / "results" / f"batch-{batch.batch:05d}.json")
        outcome = upload_batch_file(
            store,
            target,
            batch.path,
            images_dir,
            prefix,
            results_file,
            concurrency=concurrency,
            source=source,
            encryption=encryption,
        )
        log.info("%s: %d uploaded, %d failed", batch.label, outcome.uploaded, outcome.failed)
        results_files.append(results_file)
    return results_files


def plan_upload(
    store,
    target: S3Target,
    manifest_file: str | os.PathLike,
    work: Path,
    prefix: str,
    batch_size: int,
    force: bool,
    *,
    days: list[str] | None = None,
    max_batches: int = DEFAULT_MAX_BATCHES,
    unchanged_file: Path | None = None,
) -> tuple[str | None, int, list[Batch]]:
    """Check the bucket, then plan the batches under work/batches beside the listing of the run's scope (the
    prefix, or its `days` folders), writing the skipped results of the images it holds unchanged to
    `unchanged_file` (work/unchanged.json by default); with `force` nothing is listed and everything is planned.
    The DAG and the runbook both plan here. Returns (the unchanged results file, or None when forced; how many
    images it holds; the batches)."""
    check_bucket(store, target)
    listing = None if force else iter_objects(store, target, scope_prefixes(prefix, days))
    unchanged_path = None if force else str(unchanged_file or work / "unchanged.json")
    batches = plan_batches(
        manifest_file,
        work / "batches",
        batch_size,
        DEFAULT_BATCH_BYTES,
        max_batches,
        listing=listing,
        prefix=prefix,
        unchanged_file=unchanged_path,
    )
    unchanged = read_manifest_header(manifest_file)["total_images"] - sum(batch.images for batch in batches)
    log.info("%d images unchanged under %s/%s, not batched", unchanged, target.where, prefix)
    return unchanged_path, unchanged, batches


@dataclass
class UploadPlan:
    """What upload_manifest would do (its dry run): how many images (and bytes) it would upload, how many the
    bucket holds unchanged and it would skip, with the first keys of each."""

    to_upload: int
    to_upload_bytes: int
    batches: int
    unchanged: int
    listed: bool  # False when forced: the bucket was not listed and nothing is skipped
    upload_examples: list[str]
    unchanged_examples: list[str]

    @property
    def total_images(self) -> int:
        return self.to_upload + self.unchanged


def plan_manifest_upload(
    store,
    target: S3Target,
    manifest_file: str | os.PathLike,
    work_dir: str | os.PathLike,
    prefix: str,
    *,
    batch_size: int,
    concurrency: int = defaults.DEFAULT_UPLOAD_CONCURRENCY,
    force: bool = False,
    examples: int = 5,
) -> UploadPlan:
    """upload_manifest's dry run: the same manifest read, bucket check, listing and plan, and nothing sent.

    The plan's files go under work_dir (the caller's temporary folder); the refusals of a real run (a missing
    manifest or bucket, a manifest without images, a concurrency or byte budget it cannot run with) are the same.
    """
    read_manifest_header(manifest_file)
    work = Path(work_dir)
    unchanged_file, unchanged, batches = plan_upload(store, target, manifest_file, work, prefix, batch_size, force)
    if batches:
        _upload_limits(concurrency, None)
    return UploadPlan(
        to_upload=sum(batch.images for batch in batches),
        to_upload_bytes=sum(batch.bytes for batch in batches),
        batches=len(batches),
        unchanged=unchanged,
        listed=not force,
        upload_examples=_first_planned_keys(batches, prefix, examples),
        unchanged_examples=_first_keys(unchanged_file, examples) if unchanged_file else [],
    )


def _first_planned_keys(batches: list[Batch], prefix: str, count: int) -> list[str]:
    """The keys of the first `count` images the batches would upload, reading no more batches than needed."""
    planned = (image for batch in batches for image in read_batch(batch.path))
    return [image_key(prefix, image) for image in itertools.islice(planned, count)]


def _first_keys(results_file: str, count: int) -> list[str]:
    """The keys of the first `count` results of a results file, read without loading the rest."""
    with open(results_file, "rb") as f:
        return [result["key"] for result in itertools.islice(ijson.items(f, "results.item"), count)]
