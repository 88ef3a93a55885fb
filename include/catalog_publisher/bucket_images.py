"""Images read from object storage: `images_dir` = s3://bucket/prefix, for workers that share no disk.

The scan is the folder scan's, over a listing: an object's key below the prefix is its relative path, its last
segment its file name (the product id before the extension); `YYYY-MM-DD/` sub-prefixes are date folders; keys in
hidden "folders" are left out and hidden names skipped, as os.walk's scan does (and keys the object store client
cannot address, with an empty, "." or ".." segment, skipped with that reason). An object whose size, ETag and
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
import functools
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import obstore
from botocore.exceptions import BotoCoreError, ClientError
from obstore.exceptions import BaseError, InvalidPathError
from s3transfer.exceptions import S3CopyFailedError

from include.catalog_publisher.date_folders import DATE_FOLDER
from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.manifest import (
    SIGNATURE_BYTES,
    KnownObject,
    Shard,
    hostile_name_reason,
    image_entry,
    skipped_entry,
    sniff_content_type,
)
from include.catalog_publisher.s3_errors import OBJECT, as_error, classify, describe
from include.catalog_publisher.s3_store import Encryption

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
        prefix = match.group(2) if match else ""
        if not match or (prefix and any(part in ("", ".", "..") for part in prefix.split("/"))):
            raise PublisherError(f"images_dir {url!r} is not an s3://bucket[/prefix] location; pass s3://bucket/prefix")
        return cls(match.group(1), match.group(2))

    def key(self, relative_path: str) -> str:
        return f"{self.prefix}/{relative_path}" if self.prefix else relative_path

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}".rstrip("/")


def date_folders(client, location: BucketLocation) -> list[str]:
    """The YYYY-MM-DD "folders" directly below the location, sorted: one delimited listing, which stops once it is
    past any name a date can have (a flat prefix of products named by letters costs one page; names that sort
    before dates, digits say, are listed through)."""
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
        raise as_error(exc, location.url, "cannot list the images") from None
    return sorted(found)


@dataclass(frozen=True)
class BucketReader:
    """What a scan of a bucket location reads through: the location, an obstore store of its bucket (the listing and
    the reads) and a boto3 client (the date folders, and the listing where obstore cannot give a key as S3 stores
    it); write_manifest's `bucket`."""

    location: BucketLocation
    store: Any
    make_client: Callable[[], Any]  # the boto3 client, made once needed: a scan whose listing obstore gives needs none

    @functools.cached_property
    def client(self) -> Any:
        return self.make_client()

    def scan(self, subdirs=None, known=None, shard=None) -> Iterator[dict[str, Any]]:
        return scan_bucket(self, subdirs, known, shard)


def scan_bucket(
    reader: BucketReader,
    subdirs: list[str] | None = None,
    known: Mapping[str, KnownObject] | None = None,
    shard: Shard | None = None,
) -> Iterator[dict[str, Any]]:
    """scan_images for a bucket location: one record per object below it (only its `subdirs` date folders, the
    newest first, if given), listed in key order a page at a time; the objects of a page that `known` does not
    describe are read together, in bounded memory. Entries carry `e_tag` and `last_modified` where a file's carry
    its mtime, ctime and inode."""
    location = reader.location
    prefixes = [location.prefix] if subdirs is None else [location.key(day) for day in sorted(subdirs, reverse=True)]
    seen_ids: set[str] = set()
    for prefix in prefixes:
        for page in _pages(reader, f"{prefix}/" if prefix else ""):
            yield from _scan_page(reader, page, seen_ids, subdirs is not None, known or {}, shard)


def _pages(reader: BucketReader, prefix: str) -> Iterator[list[dict[str, Any]]]:
    """The listing under `prefix`, a page (up to 1000 objects) at a time, each object as its key, size, ETag and
    last-modified. obstore lists (its pages parsed in Rust, for a fraction of boto3's CPU) as long as it gives every
    key exactly; from a page where it may not (_exact), boto3, which gives any key as S3 stores it, lists the rest."""
    folder, last_key = prefix.rstrip("/"), None  # last_key: of the last page given
    try:
        for page in obstore.list(reader.store, prefix=folder or None, chunk_size=1000):
            # The folder's own marker (its key with a slash) comes as the folder: no object of the listing.
            listed = [_listed_by_obstore(meta) for meta in page if meta["path"] != folder]
            if not all(map(_exact, listed)):
                break
            if listed:
                yield listed
                last_key = listed[-1]["key"]
        else:
            return
    except InvalidPathError:
        pass  # a key it refuses: boto3 lists from the last page given
    except (BaseError, OSError) as exc:
        raise as_error(exc, reader.location.url, "cannot list the images") from None
    yield from _pages_by_boto3(reader, prefix, last_key)


def _listed_by_obstore(meta: dict[str, Any]) -> dict[str, Any]:
    """An object of obstore's listing as _pages gives it (boto3's fields: ETag unquoted, last-modified in UTC)."""
    return {
        "key": meta["path"],
        "size": meta["size"],
        "e_tag": (meta["e_tag"] or "").strip('"'),
        "modified": meta["last_modified"],
    }


def _exact(listed: dict[str, Any]) -> bool:
    """Whether obstore's key is surely the object's: what it cannot carry it replaces with U+FFFD (a control
    character), and a "folder" marker comes without its slash, as an empty object (any empty object is listed by
    boto3: it is no image either way)."""
    return "\ufffd" not in listed["key"] and listed["size"] > 0


def _pages_by_boto3(reader: BucketReader, prefix: str, after: str | None) -> Iterator[list[dict[str, Any]]]:
    """_pages through boto3, from after the key `after` (from the start if None)."""
    start = {"StartAfter": after} if after else {}
    pages = reader.client.get_paginator("list_objects_v2").paginate(
        Bucket=reader.location.bucket, Prefix=prefix, **start
    )
    try:
        for page in pages:
            yield [
                {"key": o["Key"], "size": o["Size"], "e_tag": o["ETag"].strip('"'), "modified": o["LastModified"]}
                for o in page.get("Contents", [])
            ]
    except (BotoCoreError, ClientError) as exc:
        raise as_error(exc, reader.location.url, "cannot list the images") from None


def _scan_page(reader, page, seen_ids, dated, known, shard) -> Iterator[dict[str, Any]]:
    """The records of one page of the listing, in its order: the images it does not know read at once first (not
    the names a record skips anyway)."""
    listed = [item for item in (_listed(reader.location, meta, shard) for meta in page) if item is not None]
    unknown = [i for i in listed if not _skip_reason(i) and not _known(known.get(i.relative_path), i.meta)]
    contents = asyncio.run(_read_all(reader.store, [item.meta["key"] for item in unknown])) if unknown else []
    read = {id(item): got for item, got in zip(unknown, contents, strict=True)}
    for item in listed:
        if id(item) in read and read[id(item)] is None:
            continue  # gone since the listing
        yield _record(reader.location, item, read.get(id(item)), known.get(item.relative_path), seen_ids, dated)


class _Listed(NamedTuple):
    relative_path: str
    name: str
    meta: dict[str, Any]

    @property
    def file_path(self) -> str:
        return f"{SCHEME}{self.meta['bucket']}/{self.meta['key']}"


def _listed(location: BucketLocation, meta: dict[str, Any], shard: Shard | None) -> _Listed | None:
    """An object of the listing as (relative path, name, meta); None for what a folder scan never sees: "folder"
    markers (keys ending in /), keys inside hidden "folders", another shard's products."""
    relative = meta["key"][len(location.prefix) + 1 :] if location.prefix else meta["key"]
    *folders, name = relative.split("/")
    if not name or any(folder.startswith(".") and folder not in (".", "..") for folder in folders):
        return None  # ("." and ".." are no hidden folders but keys the client cannot address: _skip_reason)
    if shard is not None and not shard.holds(name):
        return None
    return _Listed(relative, name, {**meta, "bucket": location.bucket})


def _skip_reason(item: _Listed) -> str | None:
    """Why an object is skipped whatever it holds (so it is never read): a hidden or hostile name, or a key with an
    empty, '.' or '..' segment, which the object store client cannot address."""
    if item.name.startswith("."):
        return "hidden file"
    if any(segment in ("", ".", "..") for segment in item.relative_path.split("/")):
        return "object key has an empty, '.' or '..' segment, which the S3 client cannot address; rename the object"
    return hostile_name_reason(item.name)


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What tells an object's version in a listing: its ETag and last-modified (with its size)."""
    return {"e_tag": meta["e_tag"], "last_modified": meta["modified"].isoformat()}


def _known(known: KnownObject | None, meta: dict[str, Any]) -> bool:
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
    """One object read through: its first bytes, size, digests and the ETag of the version read."""

    head: bytes
    size: int
    sha256: str
    md5: str
    e_tag: str


async def _read_all(store, keys: list[str]) -> list[_Read | BaseException | None]:
    """Each object read (or the error that stopped it; None when it is gone), SCAN_READS at a time."""
    slots = asyncio.Semaphore(SCAN_READS)

    async def read(key: str) -> _Read | BaseException | None:
        async with slots:
            try:
                return await _read(store, key)
            except FileNotFoundError:
                return None  # deleted since it was listed: not there, as a file removed mid-walk
            except (BaseError, OSError) as exc:
                return exc

    return await asyncio.gather(*(read(key) for key in keys))


async def _read(store, key: str) -> _Read:
    """One GET, hashed part by part; an object that does not start like an image is not read further."""
    got = await obstore.get_async(store, key)
    e_tag = (got.meta["e_tag"] or "").strip('"')
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    head, size = b"", 0
    async for chunk in got.stream(min_chunk_size=READ_PART):
        if not head:
            head = bytes(chunk[:SIGNATURE_BYTES])
            if sniff_content_type(head) is None:
                return _Read(head, got.meta["size"], "", "", e_tag)
        sha.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return _Read(head, size, sha.hexdigest(), base64.b64encode(md5.digest()).decode(), e_tag)


def _record(location, item: _Listed, read, known, seen_ids, dated) -> dict[str, Any]:
    """The object's record: skipped for the first check its name fails or when it cannot be read, else what its
    contents (read now, or known from the last manifest) make it."""
    if reason := _skip_reason(item):
        return skipped_entry(item.file_path.encode("utf-8", "backslashreplace").decode(), reason)
    if isinstance(read, BaseException):
        if classify(read).kind != OBJECT:  # S3 cannot serve now, or the setting is wrong: no object gets past
            raise as_error(read, location.url, "cannot read the images") from None
        error = describe(read, item.file_path)
        return skipped_entry(item.file_path, f"cannot read ({error}); fix the connection's access to it or remove it")
    if read is None:  # known: the last manifest's digests and type
        digests = (b"", item.meta["size"], known.sha256, known.md5, known.content_type)
    elif read.e_tag != item.meta["e_tag"]:  # rewritten between the listing and the read: the next scan reads it
        return skipped_entry(item.file_path, "changed while the scan read it; the next run takes it")
    else:
        digests = (read.head, read.size, read.sha256, read.md5, None)
    entry = image_entry(item.relative_path, item.name, item.file_path, *digests, seen_ids, dated, _identity(item.meta))
    if dated and "skipped" not in entry:
        entry["image_date"] = item.relative_path.split("/")[0]
    return entry


# -- publishing: a server-side copy ----------------------------------------------------------------------------


class SourceChanged(Exception):
    """The source object is not the version the manifest listed (CopySourceIfMatch or If-Match failed, or what the
    server says of the copied bytes, SHA-256 or MD5 ETag, is not the scan's): that image fails alone, for good,
    until the manifest is built again."""


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
    parts). The copy asks the server for its SHA-256: where the answer carries it (AWS) it must be the scan's, else
    a single copy's ETag, when it is an MD5 (not under SSE-KMS or SSE-C), must be the scan's MD5."""
    args: dict[str, Any] = {"MetadataDirective": "REPLACE", "ContentType": image["content_type"]}
    args.update(_encryption_args(encryption))
    if image.get("e_tag"):
        args["CopySourceIfMatch"] = f'"{image["e_tag"]}"'
    copy_source = {"Bucket": source.location.bucket, "Key": source.source_key(image)}
    try:
        if int(image["file_size"]) > multipart_threshold:
            from boto3.s3.transfer import TransferConfig

            config = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=part_size)
            config.max_concurrency = 4  # parts of one image at once: the copies share the client's connection pool
            source.copy_client.copy(copy_source, bucket, key, ExtraArgs=args, Config=config)
            return None
        answer = source.copy_client.copy_object(
            CopySource=copy_source, Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **args
        )
    except ClientError as exc:
        if _precondition_failed(exc):
            raise SourceChanged(CHANGED) from None
        raise
    except S3CopyFailedError:  # s3transfer's word for a part whose CopySourceIfMatch failed
        raise SourceChanged(CHANGED) from None
    return _verified(answer, image)


def _verified(answer: dict[str, Any], image: dict[str, Any]) -> str | None:
    """The copy's ETag, once what the server says of the copied bytes matches the scan (SourceChanged if not)."""
    result = answer.get("CopyObjectResult", {})
    e_tag = result.get("ETag", "").strip('"') or None
    if result.get("ChecksumSHA256") and image.get("sha256"):
        matches = base64.b64decode(result["ChecksumSHA256"]).hex() == image["sha256"]
    else:
        encrypted = answer.get("ServerSideEncryption", "").startswith("aws:kms") or answer.get("SSECustomerAlgorithm")
        md5 = base64.b64decode(image["md5"]).hex() if image.get("md5") else None
        matches = not (e_tag and md5 and "-" not in e_tag and not encrypted) or e_tag == md5
    if not matches:
        raise SourceChanged(f"the copy is not the scanned object; {CHANGED.split('; ')[1]}")
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
