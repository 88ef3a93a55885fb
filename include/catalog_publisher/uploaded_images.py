"""The newest image each product has in the bucket's date folders: what a dated run's catalog takes its images from.

Why: the catalog file is the whole catalog every day, but a run over date folders scans only its days. With this
record every dated run publishes every product whose document changed, each with its newest image across all the
days uploaded so far: a product whose image came days before the product, a price edit on a product whose image is
from last week, a product re-added after its tombstone.

Kept per bucket beside the run artifacts (data/uploaded-images-<bucket>.json), in the URL mapping's own shape (the
catalog rewrite reads it as a mapping). The publish updates it with its run's images, one run at a time (the task's
max_active_tis_per_dag), before it sends anything, whatever the topic then gets. It holds the bucket's images of
the catalog: the image of a product gone from the catalog whose file left its day is forgotten (its object may be
deleted). A cache of the bucket, never the truth: when it is missing, corrupt, or kept for another prefix or URL
base, it is rebuilt from a listing of the prefix's date folders (the newest day of each product) and a HEAD of each
of those images for its SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from include.catalog_publisher.files import read_json, write_json
from include.catalog_publisher.manifest import product_id_of
from include.catalog_publisher.s3_store import S3Target, iter_objects
from include.catalog_publisher.url_mapping import object_url

log = logging.getLogger(__name__)

FORMAT = "catalog-publisher/uploaded-images"
VERSION = 1
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def state_name(bucket: str) -> str:
    """The record's reference path; its latest copy is data/<name> (or .../<dag>/latest/<name>)."""
    return f"data/uploaded-images-{bucket}.json"


@dataclass
class UploadedImages:
    """product id -> the URL of its newest dated image, that image's day and (where known) its SHA-256. `url_base`
    is the URL of the prefix's root the URLs were made with (object_url): another base means other URLs. `scans`:
    day -> when the newest scan of that day taken in began (ns): an older scan forgets nothing of that day."""

    bucket: str
    prefix: str
    url_base: str
    urls: dict[str, str] = field(default_factory=dict)
    days: dict[str, str] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    scans: dict[str, int] = field(default_factory=dict)

    def take(self, mapping: Mapping[str, Any]) -> int:
        """Take a dated run's images (its URL mapping): each one whose day is at least as new as the one kept (the
        same day again: a replaced file). Returns how many entries changed."""
        dates, checksums, changed = mapping.get("product_image_dates") or {}, mapping.get("product_image_sha256"), 0
        for pid, url in mapping["product_to_s3_url"].items():
            day = dates.get(pid)
            if day is None or self.days.get(pid, "") > day:
                continue
            entry = (url, day, (checksums or {}).get(pid))
            if entry != (self.urls.get(pid), self.days.get(pid), self.checksums.get(pid)):
                changed += 1
                self._set(pid, *entry)
        return changed

    def _set(self, pid: str, url: str, day: str, checksum: str | None) -> None:
        self.urls[pid], self.days[pid] = url, day
        if checksum:
            self.checksums[pid] = checksum
        else:
            self.checksums.pop(pid, None)

    def forget(self, days: Iterable[str], scanned: set[str], catalog_ids: set[str], scan_ns: int) -> list[str]:
        """Drop the images of `days` whose file the run's scan of those days (begun at `scan_ns`) no longer found
        (`scanned`: the products it found a file of), for products gone from the catalog: their objects may now be
        deleted (removals.py), so a product re-added later must not point at one. A product still in the catalog
        keeps its image, as its live document does. A day a newer scan was taken in for is left alone (this scan
        may have missed a file that landed after it began). Returns the products dropped."""
        days = {day for day in days if scan_ns >= self.scans.get(day, 0)}
        self.scans.update(dict.fromkeys(days, scan_ns))
        gone = [pid for pid, day in self.days.items() if day in days and pid not in scanned and pid not in catalog_ids]
        for pid in gone:
            del self.urls[pid], self.days[pid]
            self.checksums.pop(pid, None)
        return gone

    def as_mapping(self) -> dict[str, Any]:
        """The record as a URL mapping document (what rewrite_catalog and save take)."""
        header = {"format": FORMAT, "version": VERSION, "bucket": self.bucket, "prefix": self.prefix}
        return {
            **header,
            "url_base": self.url_base,
            "product_to_s3_url": self.urls,
            "product_image_dates": self.days,
            "product_image_sha256": self.checksums,
            "day_scans": self.scans,
        }


def url_base(target: S3Target, prefix: str, public_base_url: str | None) -> str:
    """The URL of the prefix's root, as object_url makes the images' URLs."""
    return object_url(target, f"{prefix.strip('/')}/" if prefix.strip("/") else "", public_base_url)


def load(path: str | os.PathLike | None, bucket: str, prefix: str, url_base: str) -> UploadedImages | None:
    """The kept record of this bucket, prefix and URL base; None (with a warning saying why) when there is none it
    can trust."""
    if path is None:
        return None
    try:
        data = read_json(path, "uploaded images record")
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} {FORMAT} file")
        if (data.get("bucket"), data.get("prefix"), data.get("url_base")) != (bucket, prefix.strip("/"), url_base):
            raise ValueError(f"it records {data.get('url_base')!r} (bucket {data.get('bucket')!r}), not {url_base!r}")
        urls, days, checksums = data["product_to_s3_url"], data["product_image_dates"], data["product_image_sha256"]
        if not all(isinstance(d, dict) for d in (urls, days, checksums)) or set(days) != set(urls):
            raise ValueError("its URLs and days do not match")
    except Exception as exc:  # noqa: BLE001 - any fault of the file means: rebuild it from the bucket
        log.warning("ignoring the uploaded images record %s (%s); it is rebuilt from the bucket", path, exc)
        return None
    scans = {str(day): int(ns) for day, ns in data.get("day_scans", {}).items()}
    return UploadedImages(bucket, prefix.strip("/"), url_base, urls, days, checksums, scans)


def save(path: str | os.PathLike, images: UploadedImages) -> None:
    write_json(path, images.as_mapping())


def rebuild(
    store, target: S3Target, prefix: str, public_base_url: str | None, checksum_of: Callable[[str], str | None]
) -> UploadedImages:
    """The record from a listing of the prefix: each product's newest `{prefix}/{YYYY-MM-DD}/{file}` (of one day's
    files of a product, the first in key order, as the scan keeps), its SHA-256 asked of the object (`checksum_of`,
    a HEAD each; None where the object has no whole-object checksum, e.g. a multipart upload's)."""
    prefix = prefix.strip("/")
    images = UploadedImages(target.bucket, prefix, url_base(target, prefix, public_base_url))
    root, newest = f"{prefix}/" if prefix else "", {}
    for key, _, _ in iter_objects(store, target, [prefix]):
        day, _, name = key[len(root) :].partition("/")
        if key.startswith(root) and _DAY.fullmatch(day) and name and "/" not in name:
            pid = product_id_of(name)
            if newest.get(pid, ("",))[0] < day:
                newest[pid] = (day, key)
    with ThreadPoolExecutor(max_workers=_HEADS) as pool:
        checksums = pool.map(checksum_of, (key for _, key in newest.values()))
        for (pid, (day, key)), checksum in zip(newest.items(), checksums, strict=True):
            images._set(pid, object_url(target, key, public_base_url), day, checksum)
    log.info("rebuilt the uploaded images record from the bucket: %d products", len(images.urls))
    return images


_HEADS = 32  # HEAD requests in flight while rebuilding


def head_checksum(client, bucket: str) -> Callable[[str], str | None]:
    """checksum_of for rebuild: the object's whole-object SHA-256 (x-amz-checksum-sha256, which every upload sends)
    as hex, from a HEAD through a boto3 S3 client."""

    def checksum_of(key: str) -> str | None:
        value = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED").get("ChecksumSHA256") or ""
        try:
            return base64.b64decode(value, validate=True).hex() if "-" not in value and value else None
        except binascii.Error:
            return None

    return checksum_of
