"""Images read from object storage: `images_dir` = s3://bucket/prefix, for workers that share no disk.

The scan is the folder scan's, over a listing: an object's key below the prefix is its relative path, its last
segment its file name (the product id before the extension); `YYYY-MM-DD/` sub-prefixes are date folders; keys in
hidden "folders" are left out and hidden names skipped, as os.walk's scan does. An object whose size, ETag and
last-modified are those of its entry in the last manifest is known from the listing alone; any other is read
once, streamed (at most SCAN_READS at a time, each in parts), for its type (first bytes), SHA-256 and MD5. A
folder's symlink and permission rules have no counterpart in a bucket: what the connection may list, it may read.

An image is then published by a server-side copy (CopyObject, a multipart copy above the threshold) when one
connection reaches both buckets: no byte passes through the worker. The copy is conditional on the ETag the scan
read (CopySourceIfMatch): an object rewritten since fails alone, as a file changed since the manifest does. Its
Content-Type is the sniffed one (the copy replaces the source's metadata, as a file upload sends none), and the
run's encryption applies. From another connection (endpoint or account) it is streamed GET -> PUT (upload.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import obstore
from botocore.exceptions import BotoCoreError, ClientError
from obstore.exceptions import BaseError

from include.catalog_publisher.date_folders import DATE_FOLDER
from include.catalog_publisher.errors import PublisherError, ServiceUnavailableError
from include.catalog_publisher.manifest import (
    SIGNATURE_BYTES,
    KnownFile,
    Shard,
    hostile_name_reason,
    image_entry,
    skipped_entry,
)
from include.catalog_publisher.s3_errors import as_error
from include.catalog_publisher.s3_store import Encryption, S3Target, iter_object_meta

SCHEME = "s3://"
SCAN_READS = 32  # objects read at once by a scan (each streamed in parts of READ_PART)
READ_PART = 1024 * 1024
_LOCATION = re.compile(r"s3://([^/]+)/*(.*?)/*")


def in_bucket(images_dir: str | Any) -> bool:
    """Whether an images_dir names a bucket location rather than a folder."""
    return isinstance(images_dir, str) and images_dir.startswith(SCHEME)


class BucketLocation(NamedTuple):
    """s3://bucket/prefix: where the images are (prefix without slashes at either end; "" for the whole bucket)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> BucketLocation:
        match = _LOCATION.fullmatch(url)
        if not match or any(part in (".", "..") for part in match.group(2).split("/")):
            raise PublisherError(f"images_dir {url!r} is not an s3://bucket[/prefix] location; pass s3://bucket/prefix")
        return cls(match.group(1), match.group(2))

    def key(self, relative_path: str) -> str:
        return f"{self.prefix}/{relative_path}" if self.prefix else relative_path

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}".rstrip("/")


def date_folders(client, location: BucketLocation) -> list[str]:
    """The YYYY-MM-DD "folders" directly below the location, sorted: one delimited listing, which stops once it is
    past any name a date can have (so a flat prefix of products named by letters costs one page)."""
    start = f"{location.prefix}/" if location.prefix else ""
    last_date = f"{start}9999-99-99/"
    found: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=start, Delimiter="/"
        ):
            prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            found += [p[len(start) : -1] for p in prefixes if DATE_FOLDER.match(p[len(start) : -1])]
            keys = [o["Key"] for o in page.get("Contents", [])] + prefixes
            if keys and max(keys) > last_date:
                break
    except (BotoCoreError, ClientError) as exc:  # one message saying what to do
        raise as_error(exc, f"bucket '{location.bucket}'", "list the images of") from None
    return sorted(found)


@dataclass(frozen=True)
class BucketReader:
    """What a scan of a bucket location reads through: the location, an obstore store of its bucket and where it
    is (for messages); write_manifest's `bucket`."""

    location: BucketLocation
    store: Any
    target: S3Target

    def scan(self, subdirs=None, known=None, shard=None) -> Iterator[dict[str, Any]]:
        return scan_bucket(self.store, self.target, self.location, subdirs, known, shard)


def scan_bucket(
    store,
    target: S3Target,
    location: BucketLocation,
    subdirs: list[str] | None = None,
    known: Mapping[str, KnownFile] | None = None,
    shard: Shard | None = None,
) -> Iterator[dict[str, Any]]:
    """scan_images for a bucket location: one record per object below it (only its `subdirs` date folders, the
    newest first, if given), listed in key order a page at a time; the objects of a page that `known` does not
    describe are read together, in bounded memory. Entries carry `e_tag` and `last_modified` where a file's carry
    its mtime, ctime and inode."""
    prefixes = [location.prefix] if subdirs is None else [location.key(day) for day in sorted(subdirs, reverse=True)]
    seen_ids: set[str] = set()
    for prefix in prefixes:
        page: list[dict[str, Any]] = []
        for meta in iter_object_meta(store, target, [prefix + "/" if prefix else ""]):
            page.append(meta)
            if len(page) == 1000:
                yield from _scan_page(store, location, page, seen_ids, subdirs is not None, known or {}, shard)
                page = []
        yield from _scan_page(store, location, page, seen_ids, subdirs is not None, known or {}, shard)


def _scan_page(store, location, page, seen_ids, dated, known, shard) -> Iterator[dict[str, Any]]:
    """The records of one page of the listing, in its order: its unknown images read at once first."""
    listed = [_listed(location, meta, shard) for meta in page]
    listed = [item for item in listed if item is not None]
    unknown = [item for item in listed if not _known(known.get(item.relative_path), item.meta)]
    contents = asyncio.run(_read_all(store, [item.meta for item in unknown])) if unknown else []
    read = {id(item): got for item, got in zip(unknown, contents, strict=True)}
    for item in listed:
        if id(item) in read and read[id(item)] is None:
            continue  # gone since the listing
        yield _record(location, item, read.get(id(item)), known.get(item.relative_path), seen_ids, dated)


class _Listed(NamedTuple):
    relative_path: str
    name: str
    meta: dict[str, Any]


def _listed(location: BucketLocation, meta: dict[str, Any], shard: Shard | None) -> _Listed | None:
    """An object of the listing as (relative path, name, meta); None for what a folder scan never sees: "folder"
    markers (keys ending in /), keys inside hidden "folders", another shard's products."""
    key = meta["path"]
    relative = key[len(location.prefix) + 1 :] if location.prefix else key
    *folders, name = relative.split("/")
    if not name or any(folder.startswith(".") for folder in folders):
        return None
    if shard is not None and not shard.holds(name):
        return None
    return _Listed(relative, name, meta)


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What tells an object's version in a listing: its ETag and last-modified (with its size)."""
    return {"e_tag": (meta["e_tag"] or "").strip('"'), "last_modified": meta["last_modified"].isoformat()}


def _known(known: KnownFile | None, meta: dict[str, Any]) -> bool:
    """Whether the last manifest's entry still describes the object: size, ETag and last-modified all equal."""
    if not known or not (known.sha256 and known.md5 and known.content_type and known.e_tag):
        return False
    identity = _identity(meta)
    return (known.file_size, known.e_tag, known.last_modified) == (
        meta["size"],
        identity["e_tag"],
        identity["last_modified"],
    )


@dataclass
class _Read:
    """One object read through: its first bytes, size, digests and the version read (the GET's own meta)."""

    head: bytes
    size: int
    sha256: str
    md5: str
    meta: dict[str, Any]


async def _read_all(store, metas: list[dict[str, Any]]) -> list[_Read | BaseException]:
    """Each object read (or the error that stopped it), SCAN_READS at a time."""
    slots = asyncio.Semaphore(SCAN_READS)

    async def read(meta: dict[str, Any]) -> _Read | BaseException | None:
        async with slots:
            try:
                return await _read(store, meta["path"])
            except FileNotFoundError:
                return None  # deleted since it was listed: not there, as a file removed mid-walk
            except (BaseError, OSError) as exc:
                return exc

    return await asyncio.gather(*(read(meta) for meta in metas))


async def _read(store, key: str) -> _Read:
    """One GET, hashed part by part; an object that does not start like an image is not read further."""
    from include.catalog_publisher.manifest import sniff_content_type

    got = await obstore.get_async(store, key)
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    head, size = b"", 0
    async for chunk in got.stream(min_chunk_size=READ_PART):
        if not head:
            head = bytes(chunk[:SIGNATURE_BYTES])
            if sniff_content_type(head) is None:
                return _Read(head, got.meta["size"], "", "", got.meta)
        sha.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return _Read(head, size, sha.hexdigest(), base64.b64encode(md5.digest()).decode(), got.meta)


def _record(location, item: _Listed, read, known, seen_ids, dated) -> dict[str, Any]:
    """The object's record: skipped for the first check its name fails or when it cannot be read, else what its
    contents (read now, or known from the last manifest) make it."""
    file_path = f"{SCHEME}{location.bucket}/{item.meta['path']}"
    if item.name.startswith("."):
        return skipped_entry(file_path, "hidden file")
    reason = hostile_name_reason(item.name)
    if reason:
        return skipped_entry(file_path.encode("utf-8", "backslashreplace").decode(), reason)
    if isinstance(read, BaseException):
        error = as_error(read, f"bucket '{location.bucket}'")
        if isinstance(error, ServiceUnavailableError):  # S3 cannot serve now: the task is retried, not the object
            raise error
        return skipped_entry(file_path, f"cannot read ({error}); fix the connection's access to it or remove it")
    if read is None:  # known: the last manifest's digests and type
        digests = (b"", item.meta["size"], known.sha256, known.md5, known.content_type)
        identity = _identity(item.meta)
    else:
        digests = (read.head, read.size, read.sha256, read.md5, None)
        identity = _identity(read.meta)
    entry = image_entry(item.relative_path, item.name, file_path, *digests, seen_ids, dated, identity)
    if dated and "skipped" not in entry:
        entry["image_date"] = item.relative_path.split("/")[0]
    return entry


# -- publishing: a server-side copy ----------------------------------------------------------------------------


class SourceChanged(Exception):
    """The source object is not the version the manifest listed (CopySourceIfMatch failed, or the copy's ETag is
    not the scanned bytes' MD5): that image fails alone, for good, until the manifest is built again."""


CHANGED = "object changed since the manifest was built; rebuild the manifest"


@dataclass(frozen=True)
class BucketSource:
    """A manifest's images in a bucket, and how they reach the destination: `copy_client` (a boto3 client of the
    destination's connection) copies them on the server; else `store` (an obstore store of the source's own
    connection) is read and the bytes sent on (upload.py)."""

    location: BucketLocation
    copy_client: Any = None
    store: Any = None

    def source_key(self, image: dict[str, Any]) -> str:
        return self.location.key(image["relative_path"])


def copy_image(
    source: BucketSource,
    image: dict[str, Any],
    bucket: str,
    key: str,
    encryption: Encryption | None,
    multipart_threshold: int,
    part_size: int,
) -> str | None:
    """Copy one image on the server, conditional on the scanned ETag; the new object's ETag (None for a copy in
    parts, whose ETag is no MD5). A single copy's ETag is the MD5 of what it copied: compared with the scan's."""
    client = source.copy_client
    args: dict[str, Any] = {"MetadataDirective": "REPLACE", "ContentType": image["content_type"]}
    args.update(_encryption_args(encryption))
    if image.get("e_tag"):
        args["CopySourceIfMatch"] = f'"{image["e_tag"]}"'
    copy_source = {"Bucket": source.location.bucket, "Key": source.source_key(image)}
    try:
        if int(image["file_size"]) > multipart_threshold:
            from boto3.s3.transfer import TransferConfig

            config = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=part_size)
            client.copy(copy_source, bucket, key, ExtraArgs=args, Config=config)
            return None
        answer = client.copy_object(CopySource=copy_source, Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **args)
    except ClientError as exc:
        if _precondition_failed(exc):
            raise SourceChanged(CHANGED) from None
        raise
    e_tag = answer.get("CopyObjectResult", {}).get("ETag", "").strip('"') or None
    md5 = base64.b64decode(image["md5"]).hex() if image.get("md5") else None
    if e_tag and md5 and "-" not in e_tag and not (encryption and encryption.algorithm == "aws:kms") and e_tag != md5:
        raise SourceChanged(f"the copy's ETag {e_tag} is not the MD5 of the scanned object; {CHANGED.split('; ')[1]}")
    return e_tag


def _encryption_args(encryption: Encryption | None) -> dict[str, str]:
    """The run's server-side encryption as CopyObject arguments (the store's settings, in boto3's names)."""
    config = (encryption or Encryption()).store_config()
    names = {"server_side_encryption": "ServerSideEncryption", "sse_kms_key_id": "SSEKMSKeyId"}
    return {names[name]: value for name, value in config.items()}


def _precondition_failed(exc: BaseException) -> bool:
    """A 412 from CopySourceIfMatch (or a multipart copy's HEAD, which answers 412 too)."""
    response = getattr(exc, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 412 or response.get("Error", {}).get("Code") in ("PreconditionFailed", "412")
