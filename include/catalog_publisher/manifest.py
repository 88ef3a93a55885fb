"""Step 1: the manifest of images to publish (runbook: prepare_s3_upload.py).

The images directory is walked without following symlinks, in a deterministic order; each file's
type comes from its signature, never its extension. Entries stream to disk one at a time, so
memory does not grow with file contents and a million files fit.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import heapq
import json
import logging
import os
import re
import stat
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Generic, NamedTuple, TypeVar

import ijson
import msgspec

from include.catalog_publisher.errors import PublisherError
from include.catalog_publisher.files import atomic_output, sorted_by_key
from include.catalog_publisher.progress import Progress
from include.catalog_publisher.s3_store import image_key

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")
KEY_ORDER = "object key"  # a manifest header's images_order when its images are sorted by object key
encode_entry = msgspec.json.Encoder().encode  # one image entry as compact JSON, several times faster than json.dumps
# Longest S3 key is 1024 bytes; leave room for the prefix.
MAX_FILE_NAME_BYTES = 255


def sniff_content_type(head: bytes) -> str | None:
    """The image MIME type that the first bytes of a file announce, or None if not an image."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        # ISO-BMFF: major brand at 8..12, compatible brands after the minor version.
        box_size = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(box_size, len(head)), 4)}
        if brands & {b"avif", b"avis"}:
            return "image/avif"
    return None


SIGNATURE_BYTES = 64  # enough for every signature above, including AVIF's brand list


@dataclass
class ManifestSummary:
    path: str
    total_images: int
    total_size_bytes: int
    skipped_files: int


def product_id_of(name: str) -> str:
    """The product id an image file names: its name without the extension."""
    return name.rsplit(".", 1)[0] if "." in name else name


class Shard(NamedTuple):
    """One of `count` parts of an images folder, built by its own task: the files whose product id (the file
    name without extension) hashes to `index`."""

    index: int
    count: int

    def holds(self, name: str) -> bool:
        return zlib.crc32(product_id_of(name).encode("utf-8", "surrogatepass")) % self.count == self.index

    @property
    def label(self) -> str:
        return f"shard {self.index + 1} of {self.count}"


def hostile_name_reason(name: str) -> str | None:
    """Why a file name cannot become a product id and an object key, or None if it can."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename the file"
    if _CONTROL_CHARACTER.search(name):
        return "file name contains control characters; rename the file"
    if len(encoded) > MAX_FILE_NAME_BYTES:
        return f"file name is longer than {MAX_FILE_NAME_BYTES} bytes; rename the file"
    return None


def _walk(root: Path, subdirs: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """(relative path, name) of every entry below root (or below root/<subdir> for each of subdirs that
    exists, the newest date folder first), sorted, directories entered but never via links."""
    tops = (
        [root]
        if subdirs is None
        else [root / d for d in sorted(subdirs, reverse=True) if (root / d).is_dir() and not (root / d).is_symlink()]
    )
    for top in tops:
        yield from _walk_one(root, top)


def _walk_one(root: Path, top: Path) -> Iterator[tuple[str, str]]:
    unreadable: list[OSError] = []  # folders os.walk could not list: reported (as skipped), never left out unseen
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=unreadable.append):
        yield from _unreadable_folders(root, unreadable)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        # Linked directories are listed (and reported as skipped) rather than silently left out.
        linked_dirs = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(filenames + linked_dirs):
            yield (name if rel_dir == "." else os.path.join(rel_dir, name)), name
    yield from _unreadable_folders(root, unreadable)


def _unreadable_folders(root: Path, errors: list[OSError]) -> Iterator[tuple[str, str]]:
    """The folders os.walk could not list, as entries (their scan reports them as skipped: cannot read)."""
    while errors:
        folder = errors.pop(0).filename
        yield os.path.relpath(folder, root), os.path.basename(folder)


def _hash_file(fd: int) -> tuple[bytes, int, str, str]:
    """Signature bytes, size, hex SHA-256 and base64 MD5 of an open file, read in chunks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    head, size = b"", 0
    with os.fdopen(fd, "rb", closefd=False) as f:
        while chunk := f.read(_CHUNK):
            if not head:
                head = chunk[:SIGNATURE_BYTES]
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return head, size, sha.hexdigest(), base64.b64encode(md5.digest()).decode()


class UnsafePathError(ValueError):
    """A path that would read something other than a regular file inside the images directory."""


def open_inside(root: Path, rel_path: str) -> int:
    """Open root/rel_path read-only, refusing symlinks and anything that resolves outside root.

    The path is walked from a descriptor of root, a component at a time, none followed if it is a symlink
    (O_NOFOLLOW): nothing outside root can be reached, and no realpath (an lstat of every component of the
    whole path, for every file) is needed.
    """
    parts = Path(rel_path).parts
    if os.path.isabs(rel_path) or ".." in parts or not parts:
        raise UnsafePathError(f"path leaves the images directory: {rel_path}")
    no_follow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    directory = os.open(root, _DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            directory, parent = _open_subdirectory(directory, part, rel_path), directory
            os.close(parent)
        try:
            fd = os.open(parts[-1], no_follow, dir_fd=directory)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(f"symlink, not followed: {rel_path}") from None
            raise
    finally:
        os.close(directory)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise UnsafePathError(f"not a regular file: {rel_path}")
    return fd


# Folders on the way are opened only to look up the next name: O_PATH needs no read permission on them (a
# folder the worker may traverse but not list, as a path-based open allowed).
_DIRECTORY = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY


def _open_subdirectory(parent: int, name: str, rel_path: str) -> int:
    """The descriptor of the directory `name` in `parent`; a symlink there is refused."""
    try:
        return os.open(name, _DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except NotADirectoryError:
        if stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode):
            raise UnsafePathError(f"path leaves the images directory through a symlink: {rel_path}") from None
        raise


def scan_images(
    images_dir: str | os.PathLike,
    progress_every: float = 10.0,
    subdirs: list[str] | None = None,
    known: Mapping[str, KnownFile] | None = None,
    shard: Shard | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one record per file below images_dir (only its `subdirs`, if given): an image entry, or
    {"skipped": reason}.

    Image entries carry the reference manifest's fields plus `relative_path`, `sha256` (hex),
    `md5` (base64, compared with S3 ETags to skip unchanged images) and `mtime_ns` (with the size,
    how the upload step notices a file changed since the manifest without hashing it again). Taken from
    date folders, they also carry `image_date`, their folder: the version of the image (a product in two
    folders takes the newest one's), which its S3 key and its index version follow.

    `known` (previous_entries of the last manifest of this folder): a file whose size, mtime, ctime and inode are
    those of its entry there (one lstat) keeps that entry's digests and type without being opened; the upload step
    opens what it sends, safely.

    `shard`: only the files whose product id falls in that shard (every file of a product is in the same one, so
    a shard settles duplicates by itself); the other files are not even looked at.
    """
    root = _images_root(images_dir)
    seen_ids: set[str] = set()
    progress = Progress(log, "scanned files", total=0, interval=progress_every)
    for rel_path, name in _walk(root, subdirs):
        if shard is not None and not shard.holds(name):
            continue
        progress.advance()
        yield _scan_file(root, rel_path, name, seen_ids, dated=subdirs is not None, known=known)
    progress.finish()


def _images_root(images_dir: str | os.PathLike) -> Path:
    """The images directory as a Path; a clear error when it is missing or not a directory."""
    root = Path(images_dir)
    if not root.exists():
        hint = "pass --images-dir (or the images_dir param) pointing at the folder of product images"
        raise PublisherError(f"images directory {root} does not exist; {hint}")
    if not root.is_dir():
        raise PublisherError(f"images directory {root} is not a directory; pass the folder that holds the images")
    if not os.access(root, os.R_OK | os.X_OK):
        raise PublisherError(f"images directory {root} cannot be read; fix its permissions (or the worker's user)")
    return root


def skipped_entry(file_path: str, reason: str) -> dict[str, str]:
    """The record of a file left out of the manifest, with why."""
    return {"file_path": file_path, "skipped": reason}


def _scan_file(
    root: Path,
    rel_path: str,
    name: str,
    seen_ids: set[str],
    dated: bool = False,
    known: Mapping[str, KnownFile] | None = None,
) -> dict[str, Any]:
    """One file's record: skipped for the first check its name or path fails, else what its contents make it."""
    file_path = os.path.join(root, rel_path)
    if name.startswith("."):
        return skipped_entry(file_path, "hidden file")
    reason = hostile_name_reason(name)
    if reason:
        return skipped_entry(file_path.encode("utf-8", "backslashreplace").decode(), reason)
    try:
        info = os.lstat(file_path)  # one call: a link is skipped, and an unchanged file is known without opening it
    except OSError:
        info = None  # opening it says why
    if info is not None and stat.S_ISLNK(info.st_mode):
        return skipped_entry(file_path, "symlink, not followed; copy the real file into the images directory")
    try:
        contents = _read_contents(root, rel_path, known.get(rel_path) if known else None, info)
    except _Unreadable as exc:
        return skipped_entry(file_path, str(exc))
    digests = (contents.head, contents.size, contents.sha256, contents.md5, contents.content_type)
    identity = {"mtime_ns": contents.mtime_ns, "ctime_ns": contents.ctime_ns, "inode": contents.inode}
    entry = image_entry(rel_path, name, file_path, *digests, seen_ids, dated, identity)
    if dated and "skipped" not in entry:
        entry["image_date"] = Path(rel_path).parts[0]
    return entry


class _Contents(NamedTuple):
    """What one read of a file tells: its signature bytes, size, digests, modification and change times and inode
    (content_type when it was known from the last manifest, without reading)."""

    head: bytes
    size: int
    sha256: str
    md5: str
    mtime_ns: int
    inode: int
    ctime_ns: int
    content_type: str | None = None


class _Unreadable(Exception):
    """A file the scan cannot read (unsafe path, permissions, I/O error); its message is the skip reason."""


def _read_contents(
    root: Path, rel_path: str, known: KnownFile | None = None, info: os.stat_result | None = None
) -> _Contents:
    """Open root/rel_path safely and read it once (not at all when `known` still describes it: same size,
    mtime, ctime and inode, from its lstat `info`); _Unreadable with the reason when that fails."""
    if known and info is not None and stat.S_ISREG(info.st_mode) and _unchanged(known, info):
        # The walk reached it without following links, so its folders are real; the upload step opens it safely.
        digests = (known.sha256, known.md5, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, known.content_type)
        return _Contents(b"", info.st_size, *digests)
    try:
        fd = open_inside(root, rel_path)
    except UnsafePathError as exc:
        raise _Unreadable(f"not uploaded: {exc}") from None
    except OSError as exc:
        raise _Unreadable(f"cannot read ({exc.strerror}); fix its permissions or remove it") from None
    try:
        info = os.fstat(fd)
        head, size, sha256, md5 = _hash_file(fd)
    except OSError as exc:
        raise _Unreadable(f"cannot read ({exc.strerror}); fix its permissions or remove it") from None
    finally:
        os.close(fd)
    return _Contents(head, size, sha256, md5, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)


def _unchanged(known: KnownFile | None, info: os.stat_result) -> bool:
    """Whether the last manifest's entry still describes the file: size, mtime, ctime and inode all equal, as git's
    index compares them. The ctime catches what keeps the size and mtime (`touch -r`, `cp -p`, `rsync -t`, an
    edit that restores its mtime): no program can set it back. An entry without a ctime (a manifest from before it
    was kept) is read again."""
    if not known or not (known.sha256 and known.md5 and known.content_type) or known.ctime_ns is None:
        return False
    was = (known.file_size, known.mtime_ns, known.ctime_ns, known.inode)
    return was == (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def image_entry(
    rel_path: str,
    name: str,
    file_path: str,
    head: bytes,
    size: int,
    sha256: str,
    md5: str,
    content_type: str | None,
    seen_ids: set[str],
    dated: bool,
    identity: dict[str, Any],
) -> dict[str, Any]:
    """The manifest entry of a readable file or object (its first bytes, size and digests; its content_type when
    known from the last manifest); skipped when it is no image or its product id is missing or taken. `identity`:
    what tells its version next time (a file's mtime, ctime and inode; an object's ETag and last-modified)."""
    content_type = content_type or sniff_content_type(head)
    if content_type is None:
        reason = "empty file" if size == 0 else "not an image (unrecognised file signature)"
        return skipped_entry(file_path, reason)
    product_id = product_id_of(name)
    if not product_id:
        return skipped_entry(file_path, "file name has no product id before the extension")
    if product_id in seen_ids:
        kept = "the newest date folder's file is used" if dated else "an earlier file (in path order) is used"
        return skipped_entry(file_path, f"duplicate image for product {product_id}; {kept}")
    seen_ids.add(product_id)
    return {
        "product_id": product_id,
        "file_path": file_path,
        "file_size": size,
        "content_type": content_type,
        "relative_path": rel_path,
        "file_name": name,
        "sha256": sha256,
        "md5": md5,
        **identity,
    }


def write_manifest(
    images_dir: str | os.PathLike,
    output_file: str | os.PathLike,
    subdirs: list[str] | None = None,
    known: Mapping[str, KnownFile] | None = None,
    shard: Shard | None = None,
    bucket=None,
) -> ManifestSummary:
    """Scan images_dir (only its `subdirs`, if given; only one `shard` of it, if given) and write the manifest to
    output_file atomically. `bucket` (bucket_images.BucketReader) scans an s3:// images_dir.

    The images are listed in the order of their object keys (the header's `images_order`), so that planning
    walks the manifest beside the bucket's sorted listing instead of holding either in memory.
    Raises PublisherError when the directory is missing or holds no publishable image (a shard may hold none:
    merge_manifests decides for the whole folder; date folders may all be missing or empty: a day without images).
    """
    skipped: list[dict[str, str]] = []
    output = Path(output_file)
    output.parent.mkdir(parents=True, exist_ok=True)
    started_ns = time.time_ns()  # the next scan re-reads files changed this close to it (previous_entries)
    # Images stream to a spool file first: the reference format puts the totals before the list.
    with tempfile.TemporaryFile("w+b", dir=output.parent) as spool:
        if bucket is None:
            entries = scan_images(images_dir, subdirs=subdirs, known=known, shard=shard)
        else:
            entries = bucket.scan(subdirs, known, shard)
        total, total_bytes, in_order = _spool_entries(entries, spool, skipped)
        if total == 0 and shard is None and (subdirs is None or _not_hidden(skipped)):
            raise no_images_error(images_dir, subdirs, skipped)
        spool.seek(0)
        lines = (line.rstrip(b"\n") for line in spool)
        if not in_order:  # nested folders, or several days (read newest first)
            lines = (line for _, line in sorted_by_key((image_key("", json.loads(line)), line) for line in lines))
        header = _manifest_header(images_dir, subdirs, total, total_bytes, skipped, started_ns)
        _write_manifest_file(output, header, lines)
    log.info("manifest %s: %d images, %d bytes, %d files skipped", output, total, total_bytes, len(skipped))
    return ManifestSummary(str(output), total, total_bytes, len(skipped))


def _write_manifest_file(output: Path, header: dict[str, Any], lines: Iterator[bytes]) -> None:
    """The manifest file, atomically: the header's fields, then one image entry (a JSON line) per line."""
    with atomic_output(output, "wb") as out:
        out.write((json.dumps(header, indent=2, ensure_ascii=False)[:-2] + ',\n  "images": [').encode())
        for number, line in enumerate(lines):
            out.write((b"\n    " if number == 0 else b",\n    ") + line)
        out.write(b"\n  ]\n}\n")


def merge_manifests(parts: list[str | os.PathLike], output_file: str | os.PathLike) -> ManifestSummary:
    """One manifest of the shards' manifests, as write_manifest would have written it for the whole folder: their
    images merged in key order (a stream: one entry per part in memory), their totals added, their skipped files
    listed. Raises NoImagesError when no part holds an image (but for date folders that were all missing or empty)."""
    headers = [read_manifest_header(part) for part in parts]
    first = headers[0]
    images_dir, subdirs = first["images_dir"], first.get("date_folders")
    skipped = [item for header in headers for item in header.get("skipped", [])]
    total = sum(header["total_images"] for header in headers)
    if total == 0 and (subdirs is None or _not_hidden(skipped)):
        raise no_images_error(images_dir, subdirs, skipped)
    total_bytes = sum(header["total_size_bytes"] for header in headers)
    starts = [header.get("scan_started_ns") for header in headers]
    started_ns = min(starts) if None not in starts else None  # the earliest shard's: the one to be careful of
    streams = [((image_key("", image), image) for image in iter_manifest_images(part)) for part in parts]
    merged = (encode_entry(image) for _, image in heapq.merge(*streams, key=itemgetter(0)))
    output = Path(output_file)
    header = _manifest_header(images_dir, subdirs, total, total_bytes, skipped, started_ns)
    _write_manifest_file(output, header, merged)
    log.info("manifest %s: %d images from %d shards, %d files skipped", output, total, len(parts), len(skipped))
    return ManifestSummary(str(output), total, total_bytes, len(skipped))


def _spool_entries(entries: Iterator[dict[str, Any]], spool: IO[bytes], skipped: list[dict[str, str]]) -> tuple:
    """Write each image entry to `spool` as a JSON line and note each skipped file in `skipped`;
    (images, their bytes, whether they came in key order)."""
    total = total_bytes = 0
    last, in_order = "", True
    for entry in entries:
        if "skipped" in entry:
            log.warning("skipped %s: %s", entry["file_path"], entry["skipped"])
            skipped.append({"file_path": entry["file_path"], "reason": entry["skipped"]})
            continue
        key = image_key("", entry)
        in_order = in_order and key > last
        last = key
        spool.write(encode_entry(entry) + b"\n")
        total += 1
        total_bytes += entry["file_size"]
    return total, total_bytes, in_order


def _not_hidden(skipped: list[dict[str, str]]) -> bool:
    """Whether a scan skipped files other than hidden ones (a date folder holding only .DS_Store holds no images,
    and says nothing wrong)."""
    return any(not str(item.get("reason", "")).startswith("hidden file") for item in skipped)


class NoImagesError(PublisherError):
    """A scan found nothing to publish; `skipped` files were there but not publishable."""

    def __init__(self, message: str, skipped: int) -> None:
        super().__init__(message)
        self.skipped = skipped


def no_images_error(
    images_dir: str | os.PathLike,
    subdirs: list[str] | None,
    skipped: list[dict[str, str]],
) -> NoImagesError:
    """The error of a scan that found nothing to publish, naming where it looked and a skipped file."""
    detail = ""
    if skipped:
        detail = f" ({len(skipped)} files skipped, e.g. {skipped[0]['file_path']}: {skipped[0]['reason']})"
    where = f"{images_dir} (folders {', '.join(subdirs)})" if subdirs is not None else str(images_dir)
    message = f"no images found in {where}{detail}; put JPEG, PNG, WebP, GIF or AVIF files there"
    return NoImagesError(message, len(skipped))


def _manifest_header(
    images_dir: str | os.PathLike,
    subdirs: list[str] | None,
    total: int,
    total_bytes: int,
    skipped: list[dict[str, str]],
    started_ns: int | None = None,
) -> dict[str, Any]:
    """The manifest's fields before its image list: when, where, the totals and the skipped files."""
    return {
        "timestamp": datetime.now(UTC).isoformat(),
        **({"scan_started_ns": started_ns} if started_ns is not None else {}),
        "images_dir": str(images_dir),
        **({"date_folders": subdirs} if subdirs is not None else {}),
        "images_order": KEY_ORDER,
        "total_images": total,
        "total_size_bytes": total_bytes,
        "total_size_mb": round(total_bytes / (1024 * 1024), 2),
        "skipped_files": len(skipped),
        "skipped": skipped,
    }


class KnownFile(msgspec.Struct):
    """What the last manifest knew of one file: enough to tell it unchanged (size, mtime, inode) and what it is."""

    file_path: str
    relative_path: str | None = None  # a manifest from the original runbook has file_path only
    file_size: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    inode: int | None = None
    sha256: str | None = None
    md5: str | None = None
    content_type: str | None = None


class KnownObject(msgspec.Struct):
    """KnownFile for an object of a bucket (the last manifest of an s3:// images_dir): what tells it unchanged and
    what it is, without the fields a file needs (its s3:// file_path is not kept: the scan knows it)."""

    relative_path: str
    file_size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    content_type: str | None = None
    e_tag: str | None = None
    last_modified: str | None = None


Known = TypeVar("Known", KnownFile, KnownObject)


class _KnownManifest(msgspec.Struct, Generic[Known]):
    """The fields of the last manifest previous_entries reads: its images as KnownFile (a folder's) or KnownObject
    (a bucket's)."""

    images_dir: str = "."
    scan_started_ns: int | None = None
    images: list[Known] = []


# How close to the last scan's start a file's mtime may be and the file still be trusted unchanged: a file written
# again within one tick of the file system's clock (a second on some network file systems, two on FAT) keeps its
# mtime and ctime, so git's "racy" rule applies: such an entry is read again.
TIMESTAMP_GRANULARITY_NS = 2_000_000_000


def previous_entries(manifest_file: str | os.PathLike | None, images_dir: str | os.PathLike) -> dict[str, KnownFile]:
    """relative path -> what the last manifest of images_dir knew of the file (for scan_images' `known`).

    Only a cache: missing, for another folder, unreadable or corrupt, it is ignored (with a warning when it
    exists) and every file is read, so a lost or damaged manifest makes a run slower, never wrong. Read in one
    typed decode (msgspec, the fields above only): several times faster than streaming it."""
    if manifest_file is None or not Path(manifest_file).is_file():
        return {}
    in_bucket = _where(images_dir).startswith("s3://")
    shape = _KnownManifest[KnownObject] if in_bucket else _KnownManifest[KnownFile]
    try:
        manifest = msgspec.json.decode(Path(manifest_file).read_bytes(), type=shape)
    except (OSError, msgspec.DecodeError) as exc:
        log.warning(
            "the last manifest %s cannot be used (%s); every image is read and hashed again", manifest_file, exc
        )
        return {}
    if _where(manifest.images_dir) != _where(images_dir):
        return {}
    if manifest.scan_started_ns is None:  # a manifest from before scans were timed: every file is read again
        return {}
    if in_bucket:  # an object's ETag changes with its bytes: no racy entries
        return {image.relative_path: image for image in manifest.images}
    racy = manifest.scan_started_ns - TIMESTAMP_GRANULARITY_NS
    return {image.relative_path or image.file_path: image for image in manifest.images if (image.mtime_ns or 0) < racy}


def _where(images_dir: str | os.PathLike) -> str:
    """An images_dir as compared between manifests: a folder's real path, a bucket location as written."""
    text = str(images_dir)
    return text.rstrip("/") if text.startswith("s3://") else os.path.realpath(text)


def read_manifest_header(manifest_file: str | os.PathLike) -> dict[str, Any]:
    """The manifest's top-level fields except `images`, read without loading the image list."""
    header: dict[str, Any] = {}
    key, builder = None, None
    try:
        with open(manifest_file, "rb") as f:
            for prefix, event, value in ijson.parse(f, use_float=True):
                if prefix == "" and event in ("map_key", "end_map"):
                    if key is not None:
                        header[key] = builder.value
                        key = None
                    if event == "map_key" and value != "images":
                        key, builder = value, ijson.ObjectBuilder()
                    elif event == "map_key" and {"total_images", "images_dir"} <= header.keys():
                        break  # the usual layout: everything needed precedes the (large) list
                elif key is not None:
                    builder.event(event, value)
    except FileNotFoundError:
        raise PublisherError(
            f"manifest {manifest_file} does not exist; create it with prepare_s3_upload.py or the build_manifest task"
        ) from None
    except ijson.JSONError as exc:
        raise PublisherError(
            f"manifest {manifest_file} is not valid JSON ({exc}); regenerate it with prepare_s3_upload.py"
        ) from None
    if "total_images" not in header:
        raise PublisherError(
            f"manifest {manifest_file} has no 'total_images' field; regenerate it with prepare_s3_upload.py"
        )
    # The runbook's own format has no images_dir: its file paths are relative to the working directory.
    header.setdefault("images_dir", ".")
    return header


def iter_manifest_images(manifest_file: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Stream the manifest's image entries, completing entries in the runbook's format.

    A manifest written by the original runbook lists only product_id, file_path, file_size and
    content_type: file_name and relative_path (against images_dir ".") follow from file_path, and
    without a sha256 the upload trusts the file as it finds it.
    """
    try:
        with open(manifest_file, "rb") as f:
            for number, image in enumerate(ijson.items(f, "images.item", use_float=True), 1):
                missing = (
                    {"product_id", "file_path", "file_size", "content_type"} - image.keys()
                    if isinstance(image, dict)
                    else {"everything"}
                )
                if missing:
                    raise PublisherError(
                        f"manifest {manifest_file} image #{number} lacks {', '.join(sorted(missing))}; "
                        "regenerate it with prepare_s3_upload.py"
                    )
                image.setdefault("file_name", os.path.basename(image["file_path"]))
                image.setdefault("relative_path", image["file_path"])
                yield image
    except ijson.JSONError as exc:
        raise PublisherError(
            f"manifest {manifest_file} is not valid JSON ({exc}); regenerate it with prepare_s3_upload.py"
        ) from None


def iter_images_in_key_order(manifest_file: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The manifest's image entries in the order of their object keys: as written when the manifest says so
    (`images_order`, ours since it had one), else sorted on the way (a runbook manifest), in bounded memory."""
    if read_manifest_header(manifest_file).get("images_order") == KEY_ORDER:
        yield from iter_manifest_images(manifest_file)
        return
    records = ((image_key("", image), encode_entry(image)) for image in iter_manifest_images(manifest_file))
    decode = msgspec.json.Decoder().decode
    for _, line in sorted_by_key(records):
        yield decode(line)
